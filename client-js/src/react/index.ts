"use client";
// @palaver/client/react: React bindings of the SDK (React 18 and 19; client components only).
//
//   <PalaverProvider url="http://localhost:3000" options={{ auth: { name: "ada" } }}>
//     <Room id="general" />
//   </PalaverProvider>
//
//   function Room({ id }) {
//     const { messages, send } = useRoom(id);
//     …
//   }

export { PalaverProvider, type PalaverProviderProps } from "./provider.js";
export {
  useConnection,
  useRoom,
  useRooms,
  type UseConnectionResult,
  type UseRoomResult,
  type UseRoomsResult,
} from "./hooks.js";
