// palaver demo chat: plain DOM + TypeScript on the palaver SDK.
//
// URL parameters: ?server=http://host:port (default: this page's origin), ?name=ada (guest name),
// ?token=<jwt> (sign in), ?room=general (room to open first). The open room is kept in the URL's #fragment,
// so a reload comes back to it.

import { connect, isPalaverError } from "./sdk";
import type { ChatErrorEvent, Message, Notice, Room, RoomSummary, Session, TypingEvent, User } from "./sdk";
import { byId, h } from "./dom";
import {
  clock,
  colourFor,
  dayKey,
  dayLabel,
  fullTime,
  initials,
  newClientId,
  ROOM_ID,
  roomIdFrom,
  typingLine,
} from "./format";

// ---------------------------------------------------------------------------------------------------------------
// configuration and connection

const params = new URLSearchParams(location.search);
const serverUrl = (params.get("server") || location.origin).replace(/\/+$/, "");
const token = params.get("token") || undefined;
const guestName = params.get("name") || undefined;
const auth = token ? { token } : guestName ? { name: guestName } : {};

const PAGE = 50; // messages per history page
const TYPING_SEND_EVERY_MS = 2500; // how often we tell others we are typing
const TYPING_SHOW_MS = 4000; // how long someone's typing hint stays without a new one
const GROUP_GAP_MS = 5 * 60_000; // consecutive messages of one author within this share a header

const client = connect(serverUrl, { auth, ackTimeout: 10_000, retries: 2 });

// ---------------------------------------------------------------------------------------------------------------
// state

interface Pending {
  clientId: string;
  text: string;
  at: string;
  error?: string;
  sending: boolean;
}

interface NoticeItem extends Notice {
  /** the highest seq known when the notice arrived: it is shown after that message */
  afterSeq: number;
}

interface RoomView {
  id: string;
  kind: "group" | "dm";
  visibility: "public" | "private";
  peer?: User;
  /** the server lists us as a member */
  member: boolean;
  /** the server listed this room (rooms:list or session): it exists and we may see it */
  listed: boolean;
  /** the user wants to be in this room on this page (joined, created or DM'd here); re-joined after a reconnect */
  wanted: boolean;
  /** this connection is in the room (it receives its events) */
  entered: boolean;
  loaded: boolean;
  loading: Promise<void> | null;
  error?: string;
  messages: Map<number, Message>;
  pending: Pending[];
  notices: NoticeItem[];
  hasMore: boolean;
  olderLoading: boolean;
  unread: number;
  lastSeq: number;
  /** larger = more recently active */
  recent: number;
  online: Map<string, User>;
  typing: Map<string, { user: User; timer: ReturnType<typeof setTimeout> }>;
}

type Active = { kind: "room"; id: string } | { kind: "draft"; peer: User; pending: Pending[] } | null;
type ConnState = "connecting" | "connected" | "reconnecting" | "offline";

let me: User | null = null;
let sessions = 0;
let active: Active = null;
let conn: ConnState = "connecting";
let lastTypingSent = 0;
const rooms = new Map<string, RoomView>();

function viewFor(id: string, kind: "group" | "dm" = id.startsWith("dm:") ? "dm" : "group"): RoomView {
  let v = rooms.get(id);
  if (!v) {
    v = {
      id,
      kind,
      visibility: kind === "dm" ? "private" : "public",
      member: false,
      listed: false,
      wanted: false,
      entered: false,
      loaded: false,
      loading: null,
      messages: new Map(),
      pending: [],
      notices: [],
      hasMore: false,
      olderLoading: false,
      unread: 0,
      lastSeq: 0,
      recent: 0,
      online: new Map(),
      typing: new Map(),
    };
    rooms.set(id, v);
  }
  return v;
}

function activeView(): RoomView | null {
  return active?.kind === "room" ? (rooms.get(active.id) ?? null) : null;
}

function maxSeq(v: RoomView): number {
  let max = 0;
  for (const seq of v.messages.keys()) if (seq > max) max = seq;
  return max;
}

function minSeq(v: RoomView): number {
  let min = Infinity;
  for (const seq of v.messages.keys()) if (seq < min) min = seq;
  return min === Infinity ? 0 : min;
}

function addMessages(v: RoomView, list: Message[]): void {
  for (const m of list) {
    v.messages.set(m.seq, m);
    if (m.seq > v.lastSeq) v.lastSeq = m.seq;
    // a retried send the server deduplicated, or our own message seen from another tab
    if (m.clientId) v.pending = v.pending.filter((p) => p.clientId !== m.clientId);
  }
}

function applyRoom(v: RoomView, room: Room): void {
  v.kind = room.kind;
  v.visibility = room.visibility;
}

function roomLabel(v: RoomView): string {
  return v.kind === "dm" ? (v.peer?.name ?? "direct message") : v.id;
}

function errorText(err: unknown): string {
  if (isPalaverError(err, "rate_limited")) return "You are sending too fast — wait a moment and try again.";
  if (isPalaverError(err, "unavailable")) return "The server cannot store messages right now — try again shortly.";
  if (isPalaverError(err, "timeout")) return "The server did not answer in time.";
  if (isPalaverError(err, "disconnected")) return "Not connected to the server.";
  return err instanceof Error ? err.message : String(err);
}

// ---------------------------------------------------------------------------------------------------------------
// elements

const el = {
  conn: byId("conn-state"),
  connText: byId("conn-text"),
  joinForm: byId<HTMLFormElement>("join-form"),
  joinInput: byId<HTMLInputElement>("join-input"),
  createForm: byId<HTMLFormElement>("create-form"),
  createInput: byId<HTMLInputElement>("create-input"),
  createPrivate: byId<HTMLInputElement>("create-private"),
  roomList: byId("room-list"),
  roomListEmpty: byId("room-list-empty"),
  dmList: byId("dm-list"),
  dmListEmpty: byId("dm-list-empty"),
  browseSection: byId("browse-section"),
  browseList: byId("browse-list"),
  meAvatar: byId("me-avatar"),
  meName: byId("me-name"),
  meKind: byId("me-kind"),
  roomIcon: byId("room-icon"),
  roomTitle: byId("room-title"),
  roomSub: byId("room-sub"),
  leave: byId<HTMLButtonElement>("leave-btn"),
  banner: byId("banner"),
  messages: byId("messages"),
  composer: byId<HTMLFormElement>("composer"),
  input: byId<HTMLInputElement>("composer-input"),
  send: byId<HTMLButtonElement>("send-btn"),
  typing: byId("typing"),
  jump: byId<HTMLButtonElement>("jump-latest"),
  app: byId("app"),
  onlineTitle: byId("online-title"),
  onlineList: byId("online-list"),
  toasts: byId("toasts"),
};

// ---------------------------------------------------------------------------------------------------------------
// rendering

function avatar(user: { id: string; name: string }, extra = ""): HTMLElement {
  return h(
    "span",
    { class: `avatar ${extra}`.trim(), style: `background:${colourFor(user.name)}`, "aria-hidden": "true" },
    initials(user.name),
  );
}

function renderConn(detail?: string): void {
  const text = { connecting: "connecting…", connected: "connected", reconnecting: "reconnecting…", offline: "offline" }[conn];
  el.conn.className = `conn conn-${conn}`;
  el.app.dataset.conn = conn;
  el.conn.dataset.state = conn;
  el.connText.textContent = text;
  el.conn.title = detail ? `${text}: ${detail}` : `Connection to ${serverUrl}: ${text}`;
}

function setConn(state: ConnState, detail?: string): void {
  conn = state;
  renderConn(detail);
}

function renderMe(): void {
  if (!me) return;
  const a = avatar(me, "avatar-me");
  a.id = "me-avatar";
  el.meAvatar.replaceWith(a);
  el.meAvatar = a;
  el.meName.textContent = me.name;
  el.meName.style.color = colourFor(me.name);
  el.meKind.textContent = me.anonymous ? "guest" : "signed in";
  el.meKind.className = `me-kind ${me.anonymous ? "is-guest" : "is-user"}`;
  el.meKind.title = me.anonymous ? "Anonymous: you get a new identity on every connection" : `user id ${me.id}`;
}

function navButton(v: RoomView): HTMLElement {
  const isActive = active?.kind === "room" && active.id === v.id;
  const label = roomLabel(v);
  const icon =
    v.kind === "dm"
      ? avatar(v.peer ?? { id: v.id, name: label }, "avatar-small")
      : v.visibility === "private"
        ? h("span", { class: "nav-icon", "aria-hidden": "true" }, h("i", { class: "icon-lock" }))
        : h("span", { class: "nav-icon", "aria-hidden": "true" }, "#");
  return h(
    "li",
    {},
    h(
      "button",
      {
        type: "button",
        class: `nav-item${isActive ? " active" : ""}${v.unread ? " unread" : ""}`,
        "data-room": v.id,
        title: v.kind === "dm" ? `Direct messages with ${label}` : `#${v.id}`,
        onclick: () => openRoom(v.id),
      },
      icon,
      h("span", { class: "nav-label" }, label),
      v.unread ? h("span", { class: "badge", "aria-label": `${v.unread} unread` }, v.unread > 99 ? "99+" : v.unread) : null,
    ),
  );
}

function renderSidebar(): void {
  const all = [...rooms.values()];
  const groups = all
    .filter((v) => v.kind === "group" && (v.member || v.wanted))
    .sort((a, b) => a.id.localeCompare(b.id));
  const dms = all.filter((v) => v.kind === "dm").sort((a, b) => b.recent - a.recent);
  const browse = all
    .filter((v) => v.kind === "group" && v.listed && !v.member && !v.wanted && v.visibility === "public")
    .sort((a, b) => b.recent - a.recent)
    .slice(0, 15);
  el.roomList.replaceChildren(...groups.map(navButton));
  el.roomListEmpty.hidden = groups.length > 0;
  el.dmList.replaceChildren(...dms.map(navButton));
  el.dmListEmpty.hidden = dms.length > 0;
  el.browseList.replaceChildren(...browse.map(navButton));
  el.browseSection.hidden = browse.length === 0;
  const unread = all.reduce((n, v) => n + v.unread, 0);
  document.title = `${unread ? `(${unread}) ` : ""}${active ? `${activeTitle()} · ` : ""}palaver`;
}

function activeTitle(): string {
  if (active?.kind === "draft") return `@${active.peer.name}`;
  const v = activeView();
  if (!v) return "";
  return v.kind === "dm" ? `@${roomLabel(v)}` : `#${v.id}`;
}

function renderHeader(): void {
  const v = activeView();
  if (active?.kind === "draft") {
    el.roomIcon.textContent = "@";
    el.roomTitle.textContent = active.peer.name;
    el.roomSub.textContent = "new direct message";
    el.leave.hidden = true;
  } else if (v) {
    if (v.kind === "group" && v.visibility === "private") el.roomIcon.replaceChildren(h("i", { class: "icon-lock" }));
    else el.roomIcon.textContent = v.kind === "dm" ? "@" : "#";
    el.roomTitle.textContent = roomLabel(v);
    const online = v.online.size;
    el.roomSub.textContent =
      v.kind === "dm"
        ? "direct message"
        : v.loaded || v.listed
          ? `${v.visibility} room${v.loaded ? ` · ${online} online` : ""}`
          : "";
    el.leave.hidden = !(v.kind === "group" && (v.member || v.entered));
  } else {
    el.roomIcon.textContent = "#";
    el.roomTitle.textContent = "palaver";
    el.roomSub.textContent = "";
    el.leave.hidden = true;
  }
  const canWrite = active?.kind === "draft" || (!!v && !v.error && (v.loaded || v.entered));
  el.input.disabled = !canWrite;
  el.send.disabled = !canWrite;
  el.input.placeholder = active ? `Message ${activeTitle()}` : "Join a room to start chatting";
}

type Item =
  | { type: "msg"; m: Message }
  | { type: "notice"; n: NoticeItem }
  | { type: "pending"; p: Pending; from: User };

function timeline(v: RoomView | null, pending: Pending[]): Item[] {
  const items: Item[] = [];
  if (v) {
    const msgs = [...v.messages.values()].sort((a, b) => a.seq - b.seq);
    const notices = [...v.notices].sort((a, b) => a.afterSeq - b.afterSeq || Date.parse(a.at) - Date.parse(b.at));
    let n = 0;
    for (const m of msgs) {
      while (n < notices.length && notices[n].afterSeq < m.seq) items.push({ type: "notice", n: notices[n++] });
      items.push({ type: "msg", m });
    }
    while (n < notices.length) items.push({ type: "notice", n: notices[n++] });
  }
  if (me) for (const p of pending) items.push({ type: "pending", p, from: me });
  return items;
}

function itemTime(item: Item): string {
  return item.type === "msg" ? item.m.at : item.type === "notice" ? item.n.at : item.p.at;
}

function messageRow(
  from: { id: string; name: string },
  text: string,
  at: string,
  compact: boolean,
  attrs: Record<string, string | undefined>,
  extra: (HTMLElement | null)[] = [],
): HTMLElement {
  const time = h("time", { class: "msg-time", datetime: at, title: fullTime(at) }, clock(at));
  const body = h(
    "div",
    { class: "msg-body" },
    compact
      ? null
      : h(
          "div",
          { class: "msg-meta" },
          h("span", { class: "msg-author", style: `color:${colourFor(from.name)}`, title: from.id }, from.name),
          time,
        ),
    h("div", { class: "msg-text" }, text),
    ...extra,
  );
  const gutter = compact
    ? h("span", { class: "msg-gutter" }, h("time", { class: "msg-time-compact", datetime: at, title: fullTime(at) }, clock(at)))
    : avatar(from);
  return h("div", { class: `msg${compact ? " compact" : ""}`, ...attrs }, gutter, body);
}

function renderMessages(scroll: "auto" | "bottom" | "keep" = "auto"): void {
  const box = el.messages;
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
  const fromBottom = box.scrollHeight - box.scrollTop;
  const top = box.scrollTop;
  const v = activeView();
  const nodes: Node[] = [];

  if (!active) {
    nodes.push(
      h(
        "div",
        { class: "empty-state", id: "empty-state" },
        h("h2", {}, "Welcome to palaver"),
        h("p", {}, "Join or create a room on the left, or click someone who is online to send a direct message."),
      ),
    );
  } else if (active.kind === "draft") {
    nodes.push(
      h(
        "div",
        { class: "room-intro" },
        avatar(active.peer, "avatar-large"),
        h("h2", {}, active.peer.name),
        h("p", {}, `This is the beginning of your direct messages with ${active.peer.name}. Say hello!`),
      ),
    );
  } else if (v) {
    if (v.error && !v.loaded) {
      nodes.push(
        h(
          "div",
          { class: "empty-state error-state" },
          h("h2", {}, `Could not open ${v.kind === "dm" ? roomLabel(v) : `#${v.id}`}`),
          h("p", {}, v.error),
          h("button", { type: "button", class: "btn", onclick: () => retryOpen(v) }, "Try again"),
        ),
      );
    } else if (!v.loaded) {
      nodes.push(h("div", { class: "loading" }, "Loading messages…"));
    } else if (v.hasMore) {
      nodes.push(
        h(
          "div",
          { class: "older" },
          h(
            "button",
            { type: "button", id: "load-older", class: "btn btn-ghost", disabled: v.olderLoading, onclick: () => loadOlder(v) },
            v.olderLoading ? "Loading…" : "Load older messages",
          ),
        ),
      );
    } else {
      nodes.push(
        v.kind === "dm"
          ? h(
              "div",
              { class: "room-intro", id: "room-start" },
              avatar(v.peer ?? { id: v.id, name: roomLabel(v) }, "avatar-large"),
              h("h2", {}, roomLabel(v)),
              h("p", {}, `This is the beginning of your direct messages with ${roomLabel(v)}.`),
            )
          : h(
              "div",
              { class: "room-intro", id: "room-start" },
              h(
                "span",
                { class: "room-intro-icon", "aria-hidden": "true" },
                v.visibility === "private" ? h("i", { class: "icon-lock" }) : "#",
              ),
              h("h2", {}, `Welcome to #${v.id}`),
              h("p", {}, `This is the start of the #${v.id} room.`),
            ),
      );
    }
  }

  const items = timeline(v, active?.kind === "draft" ? active.pending : (v?.pending ?? []));
  let prev: Item | null = null;
  for (const item of items) {
    const at = itemTime(item);
    if (!prev || dayKey(itemTime(prev)) !== dayKey(at)) {
      nodes.push(h("div", { class: "day-divider", role: "separator" }, h("span", {}, dayLabel(at))));
      prev = null;
    }
    if (item.type === "notice") {
      const { n } = item;
      nodes.push(
        h(
          "div",
          { class: `notice notice-${n.kind}`, "data-user-id": n.user.id },
          h("span", { class: "notice-icon", "aria-hidden": "true" }, n.kind === "join" ? "→" : "←"),
          h(
            "span",
            { class: "notice-text" },
            h("span", { class: "notice-name", style: `color:${colourFor(n.user.name)}` }, n.user.name),
            n.kind === "join" ? " joined the room" : " left the room",
          ),
          h("time", { class: "notice-time", datetime: n.at, title: fullTime(n.at) }, clock(n.at)),
        ),
      );
    } else {
      const from = item.type === "msg" ? item.m.from : item.from;
      const sameAuthor =
        prev !== null &&
        prev.type !== "notice" &&
        (prev.type === "msg" ? prev.m.from.id : prev.from.id) === from.id &&
        Date.parse(at) - Date.parse(itemTime(prev)) < GROUP_GAP_MS;
      if (item.type === "msg") {
        const m = item.m;
        nodes.push(
          messageRow(m.from, m.text, m.at, sameAuthor, {
            "data-seq": String(m.seq),
            "data-id": m.id,
            "data-from": m.from.name,
          }),
        );
      } else {
        const p = item.p;
        const extra = p.error
          ? h(
              "div",
              { class: "msg-error" },
              h("span", {}, `Not sent: ${p.error} `),
              h("button", { type: "button", class: "link", onclick: () => resend(p) }, "Retry"),
              " · ",
              h("button", { type: "button", class: "link", onclick: () => discard(p) }, "Discard"),
            )
          : null;
        const row = messageRow(from, p.text, p.at, sameAuthor, { "data-client-id": p.clientId, "data-from": from.name }, [extra]);
        row.classList.add(p.error ? "failed" : "pending");
        nodes.push(row);
      }
    }
    prev = item;
  }

  box.replaceChildren(...nodes);
  if (scroll === "bottom" || (scroll === "auto" && atBottom)) box.scrollTop = box.scrollHeight;
  else if (scroll === "keep") box.scrollTop = box.scrollHeight - fromBottom;
  else box.scrollTop = top;
  updateJump();
}

/** "Jump to latest" while the reader is scrolled well above the newest message. */
function updateJump(): void {
  const box = el.messages;
  el.jump.hidden = !active || box.scrollHeight - box.scrollTop - box.clientHeight < 300;
}

function renderTyping(): void {
  const v = activeView();
  const names = v ? [...v.typing.values()].map((t) => t.user.name) : [];
  el.typing.replaceChildren(
    ...(names.length
      ? [h("span", { class: "typing-dots", "aria-hidden": "true" }, h("i"), h("i"), h("i")), h("span", { class: "typing-text" }, typingLine(names))]
      : []),
  );
  el.typing.classList.toggle("on", names.length > 0);
}

function renderOnline(): void {
  const v = activeView();
  let users: User[] = [];
  if (active?.kind === "draft" && me) users = [me, active.peer];
  else if (v) users = [...v.online.values()];
  if (me && v && v.loaded && !users.some((u) => u.id === me!.id) && v.entered) users.push(me);
  users.sort((a, b) => (a.id === me?.id ? -1 : b.id === me?.id ? 1 : a.name.localeCompare(b.name)));
  el.onlineTitle.textContent = active ? `Online — ${users.length}` : "Online";
  el.onlineList.replaceChildren(
    ...users.map((u) => {
      const isMe = u.id === me?.id;
      return h(
        "li",
        {},
        h(
          "button",
          {
            type: "button",
            class: `member${isMe ? " is-me" : ""}`,
            "data-user-id": u.id,
            "data-user-name": u.name,
            title: isMe ? "You" : `Send ${u.name} a direct message`,
            disabled: isMe,
            onclick: () => startDm(u),
          },
          h("span", { class: "member-avatar" }, avatar(u), h("span", { class: "presence-dot", "aria-hidden": "true" })),
          h("span", { class: "member-name", style: `color:${colourFor(u.name)}` }, u.name),
          isMe ? h("span", { class: "member-tag" }, "you") : u.anonymous ? h("span", { class: "member-tag" }, "guest") : null,
        ),
      );
    }),
  );
}

function renderAll(scroll: "auto" | "bottom" | "keep" = "auto"): void {
  renderSidebar();
  renderHeader();
  renderMessages(scroll);
  renderTyping();
  renderOnline();
}

function toast(text: string, kind: "error" | "info" = "error"): void {
  const t = h("div", { class: `toast toast-${kind}`, role: kind === "error" ? "alert" : "status" }, text);
  el.toasts.append(t);
  setTimeout(() => t.classList.add("out"), 4500);
  setTimeout(() => t.remove(), 5000);
}

function showBanner(text: string | null): void {
  el.banner.hidden = !text;
  el.banner.textContent = text ?? "";
}

// ---------------------------------------------------------------------------------------------------------------
// actions

function openRoom(id: string): void {
  const v = viewFor(id);
  active = { kind: "room", id };
  v.unread = 0;
  if (location.hash !== `#${id}`) history.replaceState(null, "", `#${id}`);
  renderAll("bottom");
  if (!v.loaded) {
    void ensureLoaded(v).then(() => {
      if (activeView() === v) renderAll("bottom");
    });
  }
  el.input.focus();
}

function ensureLoaded(v: RoomView): Promise<void> {
  if (v.loaded) return Promise.resolve();
  if (v.loading) return v.loading;
  v.wanted = true;
  v.error = undefined;
  v.loading = (async () => {
    try {
      const r = await client.join(v.id, { limit: PAGE });
      applyRoom(v, r.room);
      v.member = v.entered = v.wanted = v.listed = true;
      addMessages(v, r.history);
      v.hasMore = r.hasMore;
      v.online = new Map(r.members.map((u: User) => [u.id, u]));
      v.loaded = true;
    } catch (err) {
      v.error = errorText(err);
      if (!v.member) v.wanted = false;
      toast(`Could not open ${v.kind === "dm" ? roomLabel(v) : `#${v.id}`}: ${v.error}`);
    } finally {
      v.loading = null;
    }
  })();
  return v.loading;
}

function retryOpen(v: RoomView): void {
  v.error = undefined;
  openRoom(v.id);
}

async function loadOlder(v: RoomView): Promise<void> {
  if (v.olderLoading || !v.hasMore) return;
  v.olderLoading = true;
  renderMessages("keep");
  try {
    const page = await client.history(v.id, { before: minSeq(v), limit: PAGE });
    addMessages(v, page.messages);
    v.hasMore = page.hasMore;
  } catch (err) {
    toast(`Could not load older messages: ${errorText(err)}`);
  } finally {
    v.olderLoading = false;
    if (activeView() === v) renderMessages("keep");
  }
}

/** Messages missed while disconnected: everything after what we have. */
async function catchUp(v: RoomView, after: number): Promise<void> {
  if (after <= 0) return;
  for (let i = 0; i < 20; i++) {
    const page = await client.history(v.id, { after, limit: 100 });
    addMessages(v, page.messages);
    if (!page.hasMore || page.messages.length === 0) return;
    after = page.messages[page.messages.length - 1].seq;
  }
}

function startDm(user: User): void {
  if (!me || user.id === me.id) return;
  const existing = [...rooms.values()].find((v) => v.kind === "dm" && v.peer?.id === user.id);
  if (existing) {
    openRoom(existing.id);
    return;
  }
  active = { kind: "draft", peer: user, pending: [] };
  history.replaceState(null, "", location.pathname + location.search);
  renderAll("bottom");
  el.input.focus();
}

/** The pending list a send belongs to, and where it goes. */
function pendingHome(p: Pending): { list: Pending[]; view: RoomView | null; peer: User | null } | null {
  if (active?.kind === "draft" && active.pending.includes(p)) return { list: active.pending, view: null, peer: active.peer };
  for (const v of rooms.values()) {
    if (v.pending.includes(p)) return { list: v.pending, view: v, peer: v.kind === "dm" ? (v.peer ?? null) : null };
  }
  return null;
}

async function deliver(p: Pending): Promise<void> {
  const home = pendingHome(p);
  if (!home) return;
  p.sending = true;
  p.error = undefined;
  renderMessages("bottom");
  try {
    const sendOnce = (): Promise<Message> =>
      home.peer
        ? client.dm(home.peer.id, p.text, { clientId: p.clientId })
        : client.send(home.view!.id, p.text, { clientId: p.clientId });
    let m: Message;
    try {
      m = await sendOnce();
    } catch (err) {
      // A guest that just reconnected is a new user who is not in the room yet: enter it and send again.
      if (!home.view || home.peer || !isPalaverError(err, "forbidden")) throw err;
      home.view.entered = false;
      const r = await client.join(home.view.id, { limit: PAGE });
      home.view.entered = home.view.member = true;
      addMessages(home.view, r.history);
      m = await sendOnce();
    }
    home.list.splice(home.list.indexOf(p), 1);
    const v = viewFor(m.room, home.peer ? "dm" : undefined);
    if (home.peer) {
      v.kind = "dm";
      v.peer = home.peer;
      v.member = v.entered = v.wanted = true;
    }
    addMessages(v, [m]);
    v.recent = Date.now();
    if (active?.kind === "draft" && home.view === null) {
      // the first message of a new conversation: the DM room exists now
      openRoom(v.id);
      return;
    }
  } catch (err) {
    p.error = errorText(err);
  } finally {
    p.sending = false;
  }
  renderSidebar();
  renderMessages("auto");
}

function resend(p: Pending): void {
  void deliver(p);
}

function discard(p: Pending): void {
  const home = pendingHome(p);
  if (home) home.list.splice(home.list.indexOf(p), 1);
  renderMessages("auto");
}

function submitMessage(text: string): void {
  if (!text.trim() || !active) return;
  const p: Pending = { clientId: newClientId(), text, at: new Date().toISOString(), sending: false };
  if (active.kind === "draft") active.pending.push(p);
  else viewFor(active.id).pending.push(p);
  lastTypingSent = 0;
  renderMessages("bottom");
  void deliver(p);
}

function joinRoom(raw: string): boolean {
  const id = roomIdFrom(raw);
  if (!ROOM_ID.test(id) || id.startsWith("dm:")) {
    toast("A room name is 1–64 letters, digits, or _ . : - (and cannot start with dm:).");
    return false;
  }
  const v = viewFor(id, "group");
  v.error = undefined;
  v.wanted = true;
  openRoom(id);
  return true;
}

async function createRoom(raw: string, isPrivate: boolean): Promise<boolean> {
  const id = roomIdFrom(raw);
  if (!ROOM_ID.test(id) || id.startsWith("dm:")) {
    toast("A room name is 1–64 letters, digits, or _ . : - (and cannot start with dm:).");
    return false;
  }
  let room: Room;
  try {
    room = await client.createRoom(id, { visibility: isPrivate ? "private" : "public" });
  } catch (err) {
    toast(`Could not create #${id}: ${errorText(err)}`);
    return false;
  }
  const v = viewFor(room.id, "group");
  applyRoom(v, room);
  v.member = v.entered = v.wanted = v.loaded = v.listed = true;
  v.hasMore = false;
  v.error = undefined;
  v.recent = Date.now();
  if (me) v.online = new Map([[me.id, me]]);
  openRoom(v.id);
  return true;
}

async function leaveRoom(v: RoomView): Promise<void> {
  try {
    await client.leave(v.id);
  } catch (err) {
    if (!isPalaverError(err, "not_found")) {
      toast(`Could not leave #${v.id}: ${errorText(err)}`);
      return;
    }
  }
  v.member = v.entered = v.wanted = v.loaded = false;
  v.messages.clear();
  v.notices = [];
  v.pending = [];
  v.online.clear();
  v.hasMore = false;
  v.unread = 0;
  if (v.visibility === "private") rooms.delete(v.id);
  if (activeView() === v) {
    const next = [...rooms.values()].find((r) => r.kind === "group" && (r.member || r.wanted) && r !== v);
    if (next) openRoom(next.id);
    else {
      active = null;
      history.replaceState(null, "", location.pathname + location.search);
    }
  }
  toast(`You left #${v.id}.`, "info");
  renderAll("bottom");
}

// ---------------------------------------------------------------------------------------------------------------
// server events

function ingestRooms(list: RoomSummary[]): void {
  list.forEach((s, i) => {
    const v = viewFor(s.id, s.kind);
    applyRoom(v, s);
    v.listed = true;
    v.member = s.member;
    if (s.peer) v.peer = s.peer;
    if (s.lastSeq > v.lastSeq) v.lastSeq = s.lastSeq;
    v.recent = Math.max(v.recent > 1e12 ? 0 : v.recent, list.length - i);
    // a signed-in user's connection re-enters its rooms on connect
    if (me && !me.anonymous && s.member) v.entered = true;
  });
}

async function refreshRooms(): Promise<void> {
  try {
    ingestRooms(await client.rooms());
    renderSidebar();
    renderHeader();
  } catch {
    /* the next session brings the list again */
  }
}

function firstRoom(): string | null {
  const fromHash = decodeURIComponent(location.hash.slice(1));
  if (ROOM_ID.test(fromHash)) return fromHash;
  const fromQuery = params.get("room");
  if (fromQuery && ROOM_ID.test(roomIdFrom(fromQuery))) return roomIdFrom(fromQuery);
  const mine = [...rooms.values()].filter((v) => v.member).sort((a, b) => b.recent - a.recent);
  return mine.find((v) => v.kind === "group")?.id ?? mine[0]?.id ?? "general";
}

async function onSession(s: Session): Promise<void> {
  sessions++;
  const previous = me;
  me = s.user;
  showBanner(null);
  renderMe();
  if (previous && previous.id !== me.id) {
    // a guest gets a new identity on every connection: nothing of the old one is entered any more
    for (const v of rooms.values()) v.entered = false;
  }
  ingestRooms(s.rooms);
  if (sessions === 1) {
    const id = firstRoom();
    if (id) openRoom(id);
    else renderAll("bottom");
    return;
  }
  // reconnected: re-enter what we were in, fetch what we missed, refresh who is online
  const work: Promise<void>[] = [];
  for (const v of rooms.values()) {
    if (!v.wanted && !v.loaded) continue;
    const after = maxSeq(v);
    v.typing.forEach((t) => clearTimeout(t.timer));
    v.typing.clear();
    work.push(
      (async () => {
        try {
          if (!v.entered) {
            const r = await client.join(v.id, { limit: PAGE });
            applyRoom(v, r.room);
            v.member = v.entered = true;
            const hadNone = v.messages.size === 0;
            addMessages(v, r.history);
            if (hadNone) v.hasMore = r.hasMore;
            v.online = new Map(r.members.map((u: User) => [u.id, u]));
            v.loaded = true;
          } else {
            v.online = new Map((await client.presence(v.id)).map((u: User) => [u.id, u]));
          }
          await catchUp(v, after);
        } catch (err) {
          v.entered = false;
          if (activeView() === v) toast(`Could not re-open ${roomLabel(v)}: ${errorText(err)}`);
        }
      })(),
    );
  }
  await Promise.all(work);
  renderAll("auto");
}

client.on("session", (s: Session) => void onSession(s));

client.on("message", (m: Message) => {
  const existed = rooms.get(m.room);
  const known = !!existed && (existed.member || existed.entered || existed.loaded);
  const v = viewFor(m.room);
  if (v.kind === "dm" && !v.peer && me && m.from.id !== me.id) {
    v.peer = { id: m.from.id, name: m.from.name, anonymous: m.from.id.startsWith("anon-") };
  }
  v.entered = true;
  v.member = true;
  addMessages(v, [m]);
  v.recent = Date.now();
  const t = v.typing.get(m.from.id);
  if (t) {
    clearTimeout(t.timer);
    v.typing.delete(m.from.id);
  }
  const isActive = activeView() === v;
  if (!isActive || document.hidden) v.unread++;
  if (!known) void refreshRooms(); // a new conversation: get its summary (peer, visibility)
  renderSidebar();
  if (isActive) {
    renderMessages("auto");
    renderTyping();
  }
});

client.on("room:notice", (n: Notice) => {
  const v = rooms.get(n.room);
  if (!v) return;
  if (n.kind === "join") v.online.set(n.user.id, n.user);
  else {
    v.online.delete(n.user.id);
    const t = v.typing.get(n.user.id);
    if (t) {
      clearTimeout(t.timer);
      v.typing.delete(n.user.id);
    }
  }
  v.notices.push({ ...n, afterSeq: maxSeq(v) });
  if (activeView() === v) {
    renderHeader();
    renderMessages("auto");
    renderTyping();
    renderOnline();
  }
});

client.on("typing", (t: TypingEvent) => {
  if (!me || t.user.id === me.id) return;
  const v = rooms.get(t.room);
  if (!v) return;
  const old = v.typing.get(t.user.id);
  if (old) clearTimeout(old.timer);
  const timer = setTimeout(() => {
    v.typing.delete(t.user.id);
    if (activeView() === v) renderTyping();
  }, TYPING_SHOW_MS);
  v.typing.set(t.user.id, { user: t.user, timer });
  if (activeView() === v) renderTyping();
});

client.on("chat:error", (e: ChatErrorEvent) => {
  if (e.event === "typing") return; // a typing hint that did not go through is not worth a word
  toast(`${e.event}: ${e.error.message}`);
});

// connection state, from the socket and its manager
const socket = client.socket;
let manualRetry: ReturnType<typeof setTimeout> | null = null;
let manualDelay = 1000;

socket.on("connect", () => {
  manualDelay = 1000;
  setConn("connected");
});
socket.on("disconnect", (reason: string) => {
  if (reason === "io client disconnect") {
    setConn("offline", "closed");
    return;
  }
  if (!socket.active) {
    // the server closed this connection (for instance on shutdown): come back by ourselves
    setConn("reconnecting", reason);
    if (manualRetry) clearTimeout(manualRetry);
    manualRetry = setTimeout(() => {
      manualRetry = null;
      socket.connect();
    }, manualDelay);
    manualDelay = Math.min(manualDelay * 2, 10_000);
    return;
  }
  setConn(navigator.onLine ? "reconnecting" : "offline", reason);
});
client.onConnectError((err) => {
  if (!socket.active) {
    // refused by the server (bad token, bad name…): socket.io-client will not retry
    setConn("offline", `${err.code}: ${err.message}`);
    if (!me) {
      el.meName.textContent = token ? "not signed in" : (guestName ?? "guest");
      el.meKind.textContent = "refused by the server";
    }
    showBanner(
      `The server refused this connection (${err.code}: ${err.message}). ` +
        (token ? "Check the ?token= in the address, or remove it to join as a guest." : "Check the ?name= in the address."),
    );
    return;
  }
  setConn(navigator.onLine ? (sessions ? "reconnecting" : "connecting") : "offline", err.message);
});
socket.io.on("reconnect_attempt", () => {
  if (conn !== "connected") setConn(navigator.onLine ? "reconnecting" : "offline");
});
socket.io.on("reconnect_failed", () => setConn("offline", "gave up reconnecting"));
window.addEventListener("offline", () => {
  if (conn !== "connected" || !socket.connected) setConn("offline", "the browser is offline");
});
window.addEventListener("online", () => {
  if (!socket.connected) setConn("reconnecting");
});

// ---------------------------------------------------------------------------------------------------------------
// DOM events

el.composer.addEventListener("submit", (e) => {
  e.preventDefault();
  const text = el.input.value;
  if (!text.trim()) return;
  el.input.value = "";
  submitMessage(text);
});

el.input.addEventListener("input", () => {
  const v = activeView();
  if (!v || !v.entered || !el.input.value.trim()) return;
  const now = Date.now();
  if (now - lastTypingSent < TYPING_SEND_EVERY_MS) return;
  lastTypingSent = now;
  client.typing(v.id);
});

el.joinForm.addEventListener("submit", (e) => {
  e.preventDefault();
  if (joinRoom(el.joinInput.value)) el.joinInput.value = "";
});

el.createForm.addEventListener("submit", (e) => {
  e.preventDefault();
  void createRoom(el.createInput.value, el.createPrivate.checked).then((ok) => {
    if (ok) {
      el.createInput.value = "";
      el.createPrivate.checked = false;
    }
  });
});

el.messages.addEventListener("scroll", updateJump, { passive: true });
el.jump.addEventListener("click", () => {
  el.messages.scrollTo({ top: el.messages.scrollHeight, behavior: "smooth" });
});

el.leave.addEventListener("click", () => {
  const v = activeView();
  if (v) void leaveRoom(v);
});

window.addEventListener("hashchange", () => {
  const id = decodeURIComponent(location.hash.slice(1));
  if (ROOM_ID.test(id) && !(active?.kind === "room" && active.id === id)) openRoom(id);
});

document.addEventListener("visibilitychange", () => {
  const v = activeView();
  if (!document.hidden && v && v.unread) {
    v.unread = 0;
    renderSidebar();
  }
});

renderConn();
renderAll("bottom");
