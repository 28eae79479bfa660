// Hand-written for Orrery's interop test: parameters of the quickstart-chat reducers a client
// can call (the lifecycle reducers identity_connected / identity_disconnected / init take none
// and are not callable, so clients do not list them).
import { t } from 'spacetimedb';

/** `set_name(name: String)` — reducer id 4. */
export const SetNameParams = { name: t.string() };

/** `send_message(text: String)` — reducer id 3. */
export const SendMessageParams = { text: t.string() };
