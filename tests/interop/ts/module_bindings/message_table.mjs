// Hand-written for Orrery's interop test: the row type of the quickstart-chat `message` table
// (no primary key): sender: Identity, sent: Timestamp, text: String.
import { t } from 'spacetimedb';

export default t.row({
  sender: t.identity(),
  sent: t.timestamp(),
  text: t.string(),
});
