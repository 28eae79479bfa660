// Hand-written client bindings for modules/quickstart-chat, in the shape `spacetime generate
// --lang typescript` 1.12 produces (a RemoteModule of tables + reducers handed to the SDK's
// DbConnectionImpl). Written as plain ES modules so Node 20 runs them without a TS compiler.
import {
  DbConnectionBuilder,
  DbConnectionImpl,
  SubscriptionBuilderImpl,
  convertToAccessorMap,
  makeQueryBuilder,
  procedures,
  reducerSchema,
  reducers as reducerList,
  schema,
  table,
} from 'spacetimedb';

import UserRow from './user_table.mjs';
import MessageRow from './message_table.mjs';
import { SendMessageParams, SetNameParams } from './reducers.mjs';

export { UserRow, MessageRow };
export { User, Message, SetName, SendMessage } from './types.mjs';

const tablesSchema = schema(
  table({ name: 'message', indexes: [], constraints: [] }, MessageRow),
  table(
    {
      name: 'user',
      indexes: [{ name: 'identity', algorithm: 'btree', columns: ['identity'] }],
      constraints: [{ name: 'user_identity_key', constraint: 'unique', columns: ['identity'] }],
    },
    UserRow
  )
);

const reducersSchema = reducerList(
  reducerSchema('set_name', SetNameParams),
  reducerSchema('send_message', SendMessageParams)
);

const proceduresSchema = procedures();

/** What the SDK needs to know about the remote module. */
export const REMOTE_MODULE = {
  versionInfo: { cliVersion: '1.12.0' },
  tables: tablesSchema.schemaType.tables,
  reducers: reducersSchema.reducersType.reducers,
  ...proceduresSchema,
};

export const tables = convertToAccessorMap(tablesSchema.schemaType.tables);
export const reducers = convertToAccessorMap(reducersSchema.reducersType.reducers);

/** Typed query builder: `query.user.where(r => r.online.eq(true))` renders SQL for subscribe(). */
export const query = makeQueryBuilder(tablesSchema.schemaType);

export class SubscriptionBuilder extends SubscriptionBuilderImpl {}

export class DbConnection extends DbConnectionImpl {
  static builder = () => new DbConnectionBuilder(REMOTE_MODULE, config => new DbConnection(config));

  subscriptionBuilder = () => new SubscriptionBuilder(this);
}
