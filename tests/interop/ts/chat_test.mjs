// Interop test: the official SpacetimeDB 1.12 TypeScript SDK (npm `spacetimedb@1.12.0`) against a
// running Orrery with modules/quickstart-chat published.
//
//   node chat_test.mjs <ws-or-http-uri> <database-name>
//
// 1. Two anonymous clients A (Gzip) and B (None) connect and subscribe to every row of `user`
//    and `message` (one SubscribeMulti each); B's arrival reaches A as an insert.
// 2. A calls set_name: A's and B's onSetName fire (caller identity + connection id as in A's
//    IdentityToken), B's user.onUpdate sees name None -> "Alice", both caches agree.
// 3. A calls send_message: onSendMessage on both, B's message.onInsert, both caches; a long
//    message is gzip-framed for A and not for B (frame tags are recorded on the wire).
// 4. A failing set_name("") reaches only A, as Failed("Names must not be empty").
// 5. A disconnects (B sees online=false); A' reconnects with A's token — the SDK POSTs
//    /v1/identity/websocket-token and connects with ?token= — in light mode with confirmed
//    reads, subscribed through the SDK's typed query builder (`"user"."online" = TRUE`): same
//    identity, initial cache, B sees A online, B's message reaches A' as a light update.
// 6. B subscribes to an unknown table (onError), then unsubscribes (onDelete per cached row,
//    empty cache), then disconnects: B's row leaves A''s `online = TRUE` query (onDelete).
// Every wait is bounded; exit code 0 = pass, 1 = failure (reason on stderr).

import { WebSocket as UndiciWebSocket } from 'undici';
import { DbConnection, query } from './module_bindings/index.mjs';

const [uri, dbName] = process.argv.slice(2);
if (!uri || !dbName) {
  console.error('usage: node chat_test.mjs <uri> <database-name>');
  process.exit(2);
}
const STEP_TIMEOUT_MS = Number(process.env.STEP_TIMEOUT_MS ?? 10000);
const TOTAL_TIMEOUT_MS = Number(process.env.TOTAL_TIMEOUT_MS ?? 60000);

const log = (...args) => console.log(`[${new Date().toISOString()}]`, ...args);

class Failure extends Error {}
const fail = msg => {
  throw new Failure(msg);
};
const check = (cond, msg) => {
  if (!cond) fail(msg);
};
const hex = identity => identity.toHexString();
const show = v =>
  JSON.stringify(v, (_k, x) =>
    typeof x === 'bigint' ? x.toString() : x && x.__identity__ !== undefined ? hex(x) : x
  );

const overall = setTimeout(() => {
  console.error(`FAIL: the whole test took longer than ${TOTAL_TIMEOUT_MS} ms`);
  process.exit(1);
}, TOTAL_TIMEOUT_MS);

// --- wire recording ----------------------------------------------------------------------------
// The SDK uses globalThis.WebSocket when there is one (else it imports undici itself) and
// globalThis.fetch for the token exchange; wrapping both lets the test check what went over the
// wire: the upgrade URL and subprotocol, the compression tag of every binary frame, and the
// POST /v1/identity/websocket-token the SDK makes when it has a token.
const sockets = [];
/** Identities of this run's clients. */
const participants = [];
globalThis.WebSocket = class RecordingWebSocket extends UndiciWebSocket {
  constructor(url, protocols) {
    super(url, protocols);
    const rec = { url: new URL(url.toString()), offered: protocols, tags: [], protocol: undefined };
    sockets.push(rec);
    this.addEventListener('open', () => {
      rec.protocol = this.protocol;
    });
    this.addEventListener('message', ev => {
      if (typeof ev.data === 'string') rec.tags.push('text');
      else rec.tags.push(new Uint8Array(ev.data)[0]);
    });
  }
};
const tokenRequests = [];
const realFetch = globalThis.fetch;
globalThis.fetch = async (input, init = {}) => {
  const response = await realFetch(input, init);
  const url = new URL(input.toString());
  const rec = { method: init.method ?? 'GET', path: url.pathname, status: response.status };
  rec.authorization = new Headers(init.headers).get('Authorization');
  if (url.pathname === '/v1/identity/websocket-token' && response.ok) {
    rec.token = (await response.clone().json()).token;
  }
  tokenRequests.push(rec);
  log(`fetch ${rec.method} ${rec.path} -> ${rec.status}`);
  return response;
};

/** Resolves when `pred()` holds (checked on every `poke()` and every 20 ms). */
function until(what, pred, timeoutMs = STEP_TIMEOUT_MS) {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const tick = () => {
      let v;
      try {
        v = pred();
      } catch (e) {
        reject(e);
        return;
      }
      if (v) {
        resolve(v);
      } else if (Date.now() - started > timeoutMs) {
        reject(new Failure(`timed out after ${timeoutMs} ms waiting for: ${what}`));
      } else {
        setTimeout(tick, 20);
      }
    };
    tick();
  });
}

/** A connected client with every callback it received recorded. */
class Client {
  constructor(label) {
    this.label = label;
    this.events = [];
    this.errors = [];
    this.connected = false;
    this.disconnected = false;
    this.applied = false;
  }

  record(kind, data) {
    this.events.push({ kind, ...data });
    const text = show(data);
    log(`${this.label}: ${kind} ${text.length > 400 ? `${text.slice(0, 400)}…` : text}`);
  }

  eventsOf(kind) {
    return this.events.filter(e => e.kind === kind);
  }

  async connect({
    compression = 'gzip',
    token,
    light = false,
    confirmed,
    queries = ['SELECT * FROM user', 'SELECT * FROM message'],
  } = {}) {
    const builder = DbConnection.builder()
      .withUri(uri)
      .withModuleName(dbName)
      .withCompression(compression)
      .withLightMode(light)
      .onConnect((conn, identity, tok) => {
        this.identity = identity;
        this.token = tok;
        this.connected = true;
        log(`${this.label}: connected as ${hex(identity)} (connection ${conn.connectionId.toHexString()})`);
      })
      .onConnectError((_ctx, err) => {
        this.errors.push(`connect error: ${err?.message ?? err}`);
        log(`${this.label}: connect error`, err?.message ?? err);
      })
      .onDisconnect(() => {
        this.disconnected = true;
        log(`${this.label}: disconnected`);
      });
    if (token) builder.withToken(token);
    if (confirmed !== undefined) builder.withConfirmedReads(confirmed);
    const socketIndex = sockets.length;
    this.conn = builder.build();
    const { db, reducers } = this.conn;

    db.user.onInsert((ctx, row) => this.record('user.insert', { event: ctx.event.tag, row }));
    db.user.onUpdate((ctx, oldRow, newRow) =>
      this.record('user.update', { event: ctx.event.tag, oldRow, newRow })
    );
    db.user.onDelete((ctx, row) => this.record('user.delete', { event: ctx.event.tag, row }));
    db.message.onInsert((ctx, row) => this.record('message.insert', { event: ctx.event.tag, row }));
    db.message.onDelete((ctx, row) => this.record('message.delete', { event: ctx.event.tag, row }));
    const reducerEvent = name => (ctx, args) =>
      this.record(name, {
        args,
        caller: hex(ctx.event.callerIdentity),
        callerConnection: ctx.event.callerConnectionId?.toHexString(),
        status: ctx.event.status.tag,
        message: ctx.event.status.tag === 'Failed' ? ctx.event.status.value : undefined,
      });
    reducers.onSetName(reducerEvent('reducer.set_name'));
    reducers.onSendMessage(reducerEvent('reducer.send_message'));

    await until(`${this.label} to connect (IdentityToken)`, () => {
      if (this.errors.length) fail(`${this.label}: ${this.errors.join('; ')}`);
      if (this.disconnected) fail(`${this.label}: disconnected before IdentityToken`);
      return this.connected;
    });
    this.wire = sockets[socketIndex];
    check(this.wire, `${this.label}: the SDK connected without creating a WebSocket we could see`);
    const params = this.wire.url.searchParams;
    check(this.wire.url.pathname === `/v1/database/${dbName}/subscribe`, `${this.label}: upgrade URL ${this.wire.url}`);
    check(this.wire.protocol === 'v1.bsatn.spacetimedb', `${this.label}: negotiated subprotocol ${this.wire.protocol}`);
    check(params.get('compression') === (compression === 'gzip' ? 'Gzip' : 'None'), `${this.label}: upgrade URL ${this.wire.url}`);
    check((params.get('light') === 'true') === light, `${this.label}: upgrade URL ${this.wire.url}`);
    check(params.get('confirmed') === (confirmed === undefined ? null : String(confirmed)), `${this.label}: upgrade URL ${this.wire.url}`);

    this.subscription = this.conn
      .subscriptionBuilder()
      .onApplied(() => {
        this.applied = true;
        log(`${this.label}: subscription applied`);
      })
      .onError((_ctx, err) => {
        this.errors.push(`subscription error: ${err?.message ?? err}`);
      })
      .subscribe(queries);
    await until(`${this.label}'s subscription to apply`, () => {
      if (this.errors.length) fail(`${this.label}: ${this.errors.join('; ')}`);
      return this.applied;
    });
    return this;
  }

  userRow(identity) {
    return this.conn.db.user.identity.find(identity);
  }

  /** Cached messages sent by this test's clients (a reused database may hold older ones). */
  messages() {
    return [...this.conn.db.message.iter()].filter(m => participants.some(id => id.isEqual(m.sender))).sort((a, b) =>
      a.sent.microsSinceUnixEpoch < b.sent.microsSinceUnixEpoch ? -1 : 1
    );
  }

  async disconnect() {
    this.conn.disconnect();
    await until(`${this.label} to see its socket close`, () => this.disconnected);
  }
}

async function main() {
  // Texts unique to this run, so the checks hold on a database that already has messages.
  const run = Math.random().toString(36).slice(2, 8);
  const helloA = `Hello from A (${run})`;
  const hiB = `Hi A, from B (${run})`;
  log(`SDK test against ${uri}, database ${dbName}`);

  // --- two anonymous clients --------------------------------------------------------------
  const a = await new Client('A').connect({ compression: 'gzip' });
  const b = await new Client('B').connect({ compression: 'none' });
  check(!a.identity.isEqual(b.identity), 'A and B got the same identity');
  participants.push(a.identity, b.identity);
  const userCount = b.conn.db.user.count();
  check(typeof a.token === 'string' && a.token.split('.').length === 3, `A's token is not a JWT: ${a.token}`);

  // B's initial subscription holds both users (identity_connected ran for each), online, no name.
  for (const [who, c] of [['A', a], ['B', b]]) {
    const row = b.userRow(c.identity);
    check(row, `B's cache has no user row for ${who} after the initial subscription`);
    check(row.online === true && row.name === undefined, `B's user row for ${who}: ${show(row)}`);
  }
  // A subscribed before B connected: B's arrival reaches A as a transaction update (insert).
  await until("A's user.onInsert for B", () =>
    a.eventsOf('user.insert').find(e => e.row.identity.isEqual(b.identity) && e.event !== 'SubscribeApplied')
  );
  check(a.userRow(b.identity)?.online === true, `A's cache row for B: ${show(a.userRow(b.identity))}`);

  // --- set_name from A ---------------------------------------------------------------------
  a.conn.reducers.setName({ name: 'Alice' });
  const aSetName = await until("A's onSetName callback", () => a.eventsOf('reducer.set_name')[0]);
  check(aSetName.status === 'Committed', `A's set_name event status: ${show(aSetName)}`);
  check(aSetName.args.name === 'Alice', `A's set_name event args: ${show(aSetName.args)}`);
  check(aSetName.caller === hex(a.identity), `A's set_name event caller: ${aSetName.caller}`);
  // The caller's connection id in TransactionUpdate is the one IdentityToken gave A.
  check(
    aSetName.callerConnection === a.conn.connectionId.toHexString(),
    `A's set_name event caller connection ${aSetName.callerConnection}, IdentityToken said ${a.conn.connectionId.toHexString()}`
  );

  const bUpdate = await until("B's user.onUpdate for A's name", () =>
    b.eventsOf('user.update').find(e => e.newRow.identity.isEqual(a.identity))
  );
  check(bUpdate.event === 'Reducer', `B's user update event tag: ${bUpdate.event}`);
  check(
    bUpdate.oldRow.name === undefined && bUpdate.newRow.name === 'Alice' && bUpdate.newRow.online,
    `B's user update old/new: ${show(bUpdate)}`
  );
  check(b.userRow(a.identity)?.name === 'Alice', `B's cache row for A: ${show(b.userRow(a.identity))}`);
  check(a.userRow(a.identity)?.name === 'Alice', `A's cache row for A: ${show(a.userRow(a.identity))}`);
  check(b.conn.db.user.count() === userCount, `B's user count went from ${userCount} to ${b.conn.db.user.count()}`);
  // An update is delete+insert of one primary key: no onInsert/onDelete for it.
  check(
    !b.eventsOf('user.delete').length &&
      !b.eventsOf('user.insert').some(e => e.event === 'Reducer'),
    `B saw insert/delete callbacks for an update: ${show(b.events)}`
  );
  const bSetName = await until("B's onSetName callback (A's call)", () => b.eventsOf('reducer.set_name')[0]);
  check(bSetName.caller === hex(a.identity) && bSetName.status === 'Committed', `B's set_name event: ${show(bSetName)}`);

  // --- send_message from A -----------------------------------------------------------------
  const before = BigInt(Date.now()) * 1000n;
  a.conn.reducers.sendMessage({ text: helloA });
  const aSend = await until("A's onSendMessage callback", () => a.eventsOf('reducer.send_message')[0]);
  check(aSend.status === 'Committed' && aSend.args.text === helloA, `A's send_message event: ${show(aSend)}`);
  const bInsert = await until("B's message.onInsert", () => b.eventsOf('message.insert').find(e => e.event !== 'SubscribeApplied'));
  check(bInsert.event === 'Reducer', `B's message insert event tag: ${bInsert.event}`);
  check(
    bInsert.row.sender.isEqual(a.identity) && bInsert.row.text === helloA,
    `B's inserted message: ${show(bInsert.row)}`
  );
  const sent = bInsert.row.sent.microsSinceUnixEpoch;
  check(sent >= before - 5_000_000n && sent <= BigInt(Date.now()) * 1000n + 5_000_000n, `message timestamp ${sent} not near now`);
  const bSend = await until("B's onSendMessage callback (A's call)", () => b.eventsOf('reducer.send_message')[0]);
  check(bSend.caller === hex(a.identity), `B's send_message event: ${show(bSend)}`);
  for (const c of [a, b]) {
    const msgs = c.messages();
    check(msgs.length === 1 && msgs[0].text === helloA, `${c.label}'s message cache: ${show(msgs)}`);
  }

  // --- a message big enough (> 1024 B of BSATN) to be compressed for A (Gzip), not for B ----
  const longText = `${run} ${'spacetime '.repeat(300)}`;
  const aTagsBefore = a.wire.tags.length;
  a.conn.reducers.sendMessage({ text: longText });
  for (const c of [a, b]) {
    await until(`${c.label}'s message.onInsert for the long message`, () =>
      c.eventsOf('message.insert').find(e => e.row.text === longText)
    );
    check(c.messages().length === 2, `${c.label}'s message cache: ${show(c.messages())}`);
  }
  check(a.wire.tags.slice(aTagsBefore).includes(2), `A (Gzip) got no gzip frame for a large update; tags ${a.wire.tags}`);
  check(b.wire.tags.every(t => t === 0), `B (compression=None) got frames with tags ${b.wire.tags}`);
  check(a.wire.tags.every(t => t === 0 || t === 2), `A got frames with tags ${a.wire.tags}`);

  // --- a failing reducer: only the caller hears about it -----------------------------------
  a.conn.reducers.setName({ name: '' });
  const aFailed = await until("A's onSetName callback for the failed call", () => a.eventsOf('reducer.set_name')[1]);
  check(
    aFailed.status === 'Failed' && aFailed.message === 'Names must not be empty',
    `A's failed set_name event: ${show(aFailed)}`
  );
  check(a.userRow(a.identity)?.name === 'Alice', 'a failed set_name changed A\'s cache');

  // --- A leaves; reconnects with its token, light mode ------------------------------------
  check(!tokenRequests.length, `anonymous clients made HTTP requests: ${show(tokenRequests)}`);
  const tokenA = a.token;
  await a.disconnect();
  const bOffline = await until("B's user.onUpdate for A going offline", () =>
    b.eventsOf('user.update').find(e => e.newRow.identity.isEqual(a.identity) && !e.newRow.online)
  );
  check(bOffline.newRow.name === 'Alice', `B's offline update for A: ${show(bOffline)}`);

  // A' subscribes with the SDK's typed query builder (quoted identifiers, `"user"."online" = TRUE`).
  const a2 = await new Client("A'").connect({
    compression: 'gzip',
    token: tokenA,
    light: true,
    confirmed: true,
    queries: [query.user.where(r => r.online.eq(true)), query.message.build()],
  });
  check(a2.identity.isEqual(a.identity), `reconnecting with A's token gave identity ${hex(a2.identity)}, not ${hex(a.identity)}`);
  // The SDK swapped the token for a short-lived one over HTTP and put that on the upgrade URL.
  check(tokenRequests.length === 1, `token requests: ${show(tokenRequests)}`);
  const [tr] = tokenRequests;
  check(
    tr.method === 'POST' && tr.path === '/v1/identity/websocket-token' && tr.status === 200,
    `token request: ${show(tr)}`
  );
  check(tr.authorization === `Bearer ${tokenA}`, `token request Authorization: ${tr.authorization}`);
  check(tr.token && a2.wire.url.searchParams.get('token') === tr.token, `A' upgrade URL ${a2.wire.url} (short token ${tr.token})`);
  check(a2.userRow(a.identity)?.name === 'Alice', `A' initial cache row for A: ${show(a2.userRow(a.identity))}`);
  const a2Texts = a2.messages().map(m => m.text);
  check(a2Texts.length === 2 && a2Texts[0] === helloA && a2Texts[1] === longText, `A' initial messages: ${show(a2Texts)}`);
  await until("B's user.onUpdate for A back online", () =>
    b.eventsOf('user.update').find(
      e => e.newRow.identity.isEqual(a.identity) && e.newRow.online && e !== bUpdate
    )
  );

  b.conn.reducers.sendMessage({ text: hiB });
  const a2Insert = await until("A' (light mode) message.onInsert for B's message", () =>
    a2.eventsOf('message.insert').find(e => e.row.text === hiB)
  );
  check(a2Insert.row.sender.isEqual(b.identity), `A' inserted message: ${show(a2Insert.row)}`);
  // Light mode: A' gets no reducer info for other clients' calls.
  check(!a2.eventsOf('reducer.send_message').length, "A' (light) got a reducer callback for B's call");
  const bOwn = await until("B's onSendMessage for its own call", () =>
    b.eventsOf('reducer.send_message').find(e => e.caller === hex(b.identity))
  );
  check(bOwn.status === 'Committed', `B's own send_message event: ${show(bOwn)}`);

  // --- a bad query: SubscriptionError for that subscription only ---------------------------
  let badError;
  b.conn
    .subscriptionBuilder()
    .onApplied(() => (badError = 'applied'))
    .onError((_ctx, err) => (badError = err?.message ?? String(err)))
    .subscribe('SELECT * FROM no_such_table');
  await until("B's onError for a subscription to an unknown table", () => badError);
  check(badError !== 'applied', 'a subscription to an unknown table was applied');
  log(`B: bad subscription error: ${badError}`);

  // --- B unsubscribes: UnsubscribeMultiApplied deletes every row from its cache -------------
  const bRows = Number(b.conn.db.user.count() + b.conn.db.message.count());
  const deletesBefore = b.eventsOf('user.delete').length + b.eventsOf('message.delete').length;
  let ended = false;
  b.subscription.unsubscribeThen(() => (ended = true));
  await until("B's unsubscribeThen callback", () => ended);
  check(b.subscription.isEnded(), "B's subscription handle is not ended after UnsubscribeApplied");
  check(
    b.conn.db.user.count() === 0n && b.conn.db.message.count() === 0n,
    `B's cache after unsubscribing: ${b.conn.db.user.count()} users, ${b.conn.db.message.count()} messages`
  );
  const deletes = b.eventsOf('user.delete').length + b.eventsOf('message.delete').length - deletesBefore;
  check(deletes === bRows, `B got ${deletes} onDelete callbacks for ${bRows} cached rows`);

  for (const c of [a2, b]) {
    check(!c.errors.length, `${c.label} errors: ${c.errors.join('; ')}`);
  }

  // --- B leaves: its row stops matching A''s `online = TRUE` query, so A' sees a delete --------
  check(a2.userRow(b.identity)?.online === true, `A' cache row for B: ${show(a2.userRow(b.identity))}`);
  await b.disconnect();
  const a2Delete = await until("A''s user.onDelete for B going offline", () =>
    a2.eventsOf('user.delete').find(e => e.row.identity.isEqual(b.identity))
  );
  check(a2Delete.row.online === true, `A' deleted row for B: ${show(a2Delete.row)}`);
  check(!a2.userRow(b.identity), "B is still in A''s cache of online users");
  check(
    [...a2.conn.db.user.iter()].every(u => u.online),
    `A' cache holds offline users: ${show([...a2.conn.db.user.iter()])}`
  );
  check(!a2.errors.length, `A' errors: ${a2.errors.join('; ')}`);
  await a2.disconnect();
}

main().then(
  () => {
    clearTimeout(overall);
    log('PASS');
    process.exit(0);
  },
  err => {
    clearTimeout(overall);
    console.error(`FAIL: ${err instanceof Failure ? err.message : err?.stack ?? err}`);
    process.exit(1);
  }
);
