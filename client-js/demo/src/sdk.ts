// The palaver SDK (client-js/src), compiled by Vite together with the page.
export { connect, PalaverError, isPalaverError } from "../../src/index";
export type {
  ChatErrorEvent,
  Message,
  Room,
  RoomNotice as Notice,
  RoomSummary,
  Session,
  TypingEvent,
  User,
} from "../../src/index";
