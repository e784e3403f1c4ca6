// palaver demo chat: a React app on @palaver/client/react. The address says which server and who (config.ts).

import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { PalaverProvider } from "@palaver/client/react";

import { App } from "./App";
import { clientOptions, serverUrl } from "./config";
import { Toasts } from "./toasts";

createRoot(document.getElementById("root")!).render(
  <StrictMode>
    <PalaverProvider url={serverUrl} options={clientOptions}>
      <Toasts>
        <App />
      </Toasts>
    </PalaverProvider>
  </StrictMode>,
);
