// A DOM for React in Node (jsdom), and React Fast Refresh's runtime hooked in as Vite's React plugin does in a
// browser. Import this module before react-dom: React DOM looks for both when it loads.
//
// React here is the real renderer (react-dom/client, development build: StrictMode double-invokes effects) and the
// SDK talks to a real palaver; only the page is simulated.
import { JSDOM } from "jsdom";
import RefreshRuntime from "react-refresh/runtime";

const dom = new JSDOM("<!doctype html><html><body></body></html>", { url: "http://localhost/" });
for (const name of ["window", "document", "navigator", "HTMLElement", "Node", "Element", "MutationObserver"]) {
  if (!(name in globalThis) || name === "window" || name === "document") {
    Object.defineProperty(globalThis, name, { value: dom.window[name], configurable: true, writable: true });
  }
}
// Renders happen on React's scheduler, as in a browser; the tests wait for what they expect (`until`), not `act`.
globalThis.IS_REACT_ACT_ENVIRONMENT = false;
RefreshRuntime.injectIntoGlobalHook(globalThis);

export { RefreshRuntime };
