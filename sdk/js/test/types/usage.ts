// What an application written in TypeScript sees of the package (dist/*.d.ts): `npm test`
// type-checks this file (it is never run). A change that breaks these uses fails there.
import {
  ClientClosed, type CursorStorage, type Message, PushClient, type StateChange, type UpReply,
} from "../../dist/index.js";

const storage: CursorStorage = {
  getItem: async (key) => key,                   // an async store (React Native's AsyncStorage)
  setItem: async () => undefined,
};
const client = new PushClient({
  dispatcher: "https://push.example.com", app: "demo", uid: "alice", storage,
  token: async () => "token", heartbeatS: 60, autoAck: false,
});
const off: () => void = client.on("message", (message: Message) => {
  const id: string = message.id;                 // 64-bit ids are strings
  const kind: "unicast" | "topic" | "broadcast" = message.kind;
  const data: Uint8Array = message.data;
  client.ack(message);
  return [id, kind, data];
});
client.on("state", (change: StateChange) => {
  if (change.state === "closed" && change.error instanceof ClientClosed) {
    const code: number = change.error.closeCode;
    void code;
  }
});
export async function use(): Promise<UpReply> {
  await client.connect();
  const topics: string[] = await client.bind("", "", ["news"]);
  void topics;
  off();
  const reply = await client.sendUp("demo", "chat", "hello");
  await client.close();
  return reply;
}
