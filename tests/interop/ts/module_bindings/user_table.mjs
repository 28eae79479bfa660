// Hand-written for Orrery's interop test: the row type of the quickstart-chat `user` table
// (modules/quickstart-chat/README.md): identity (primary key), name: Option<String>, online: bool.
import { t } from 'spacetimedb';

export default t.row({
  identity: t.identity().primaryKey(),
  name: t.option(t.string()),
  online: t.bool(),
});
