import type { TypedDocumentNode } from "@graphql-typed-document-node/core";
import { print } from "graphql";
import { NIMBUS_PROJECT, NIMBUS_URL, type GraphQLErrorEntry } from "./request.js";

/**
 * One subscription over its own WebSocket (the `graphql-transport-ws` protocol),
 * its results typed from the document: `subscribe(PostChangedDocument, { after })`
 * yields `PostChangedSubscription`s.
 */
export interface Subscription<TResult> {
  /** The next result, waiting up to `ms` for it. */
  next(ms?: number): Promise<TResult>;
  /** Results already received and not yet taken. */
  pending(): number;
  /** Answers once the server has read everything sent so far (a ping's pong). */
  settled(): Promise<void>;
  /** Drops the connection, as a network failure would. */
  close(): void;
}

export async function subscribe<TResult, TVariables>(
  document: TypedDocumentNode<TResult, TVariables>,
  variables: TVariables,
  init: Record<string, string> = {},
): Promise<Subscription<TResult>> {
  // Global in Node 22 and later; Node 20 needs `--experimental-websocket`.
  const socket = new WebSocket(`${NIMBUS_URL.replace(/^http/, "ws")}/v1/graphql/ws`, "graphql-transport-ws");
  const results: TResult[] = [];
  const waiting: Array<() => void> = [];
  let failure: Error | null = null;
  const wake = () => waiting.splice(0).forEach((w) => w());
  const fail = (error: Error) => {
    failure ??= error;
    wake();
  };
  let pongs = 0;
  let acknowledged: () => void = () => {};
  const ready = new Promise<void>((resolve) => (acknowledged = resolve));
  socket.onmessage = (event: MessageEvent) => {
    const message = JSON.parse(String(event.data)) as {
      type: string;
      payload?: { data?: TResult; errors?: GraphQLErrorEntry[] } | GraphQLErrorEntry[];
    };
    if (message.type === "connection_ack") acknowledged();
    else if (message.type === "pong") pongs += 1;
    else if (message.type === "next" && message.payload && !Array.isArray(message.payload)) {
      if (message.payload.errors?.length) {
        const [first] = message.payload.errors;
        fail(new Error(`subscription: ${first?.extensions?.code ?? "no code"}: ${first?.message}`));
      } else if (message.payload.data) {
        results.push(message.payload.data);
      }
    } else if (message.type === "error") fail(new Error(`subscription refused: ${JSON.stringify(message.payload)}`));
    wake();
  };
  socket.onclose = (event: CloseEvent) => fail(new Error(`socket closed: ${event.code} ${event.reason}`));
  await new Promise<void>((resolve, reject) => {
    socket.onopen = () => resolve();
    socket.onerror = () => reject(new Error("WebSocket connection failed"));
  });
  socket.send(JSON.stringify({ type: "connection_init", payload: { "X-Nimbus-Project": NIMBUS_PROJECT, ...init } }));
  await ready;
  socket.send(JSON.stringify({ id: "1", type: "subscribe", payload: { query: print(document), variables } }));

  const until = async (done: () => boolean, ms: number, what: string) => {
    const deadline = Date.now() + ms;
    while (!done()) {
      if (failure) throw failure;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`subscription: no ${what} within ${ms} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        waiting.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  };
  let pings = 0;
  return {
    async next(ms = 10_000) {
      await until(() => results.length > 0, ms, "result");
      return results.shift() as TResult;
    },
    pending: () => results.length,
    async settled() {
      pings += 1;
      const wanted = pings;
      socket.send(JSON.stringify({ type: "ping" }));
      await until(() => pongs >= wanted, 10_000, "pong");
    },
    close() {
      socket.onclose = null;
      socket.close();
    },
  };
}
