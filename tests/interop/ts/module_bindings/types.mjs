// Hand-written for Orrery's interop test: the named product types of quickstart-chat
// (`User` is typespace ref 1, `Message` ref 0) and the argument products of its reducers.
import { t } from 'spacetimedb';

export const User = t.object('User', {
  identity: t.identity(),
  name: t.option(t.string()),
  online: t.bool(),
});

export const Message = t.object('Message', {
  sender: t.identity(),
  sent: t.timestamp(),
  text: t.string(),
});

export const SetName = t.object('SetName', { name: t.string() });
export const SendMessage = t.object('SendMessage', { text: t.string() });
