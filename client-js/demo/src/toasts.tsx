// Short messages in the corner: errors of calls, and what happened ("You left #general.").

import { createContext, useCallback, useContext, useState, type ReactNode } from "react";

type ToastKind = "error" | "info";

interface Toast {
  id: number;
  text: string;
  kind: ToastKind;
  leaving: boolean;
}

type Say = (text: string, kind?: ToastKind) => void;

const ToastContext = createContext<Say>(() => {});

let nextId = 0;

export function Toasts({ children }: { children: ReactNode }) {
  const [toasts, setToasts] = useState<Toast[]>([]);
  const say = useCallback<Say>((text, kind = "error") => {
    const id = ++nextId;
    setToasts((list) => [...list, { id, text, kind, leaving: false }]);
    setTimeout(() => setToasts((list) => list.map((t) => (t.id === id ? { ...t, leaving: true } : t))), 4500);
    setTimeout(() => setToasts((list) => list.filter((t) => t.id !== id)), 5000);
  }, []);
  return (
    <ToastContext.Provider value={say}>
      {children}
      <div id="toasts" className="toasts" aria-live="assertive">
        {toasts.map((t) => (
          <div
            key={t.id}
            className={`toast toast-${t.kind}${t.leaving ? " out" : ""}`}
            role={t.kind === "error" ? "alert" : "status"}
          >
            {t.text}
          </div>
        ))}
      </div>
    </ToastContext.Provider>
  );
}

/** `toast(text)` for an error, `toast(text, "info")` for news. */
export function useToast(): Say {
  return useContext(ToastContext);
}
