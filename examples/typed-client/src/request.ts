import type { TypedDocumentNode } from "@graphql-typed-document-node/core";
import { print, type DocumentNode, type OperationDefinitionNode } from "graphql";

/** Where the server is and which project to address. */
export const NIMBUS_URL = process.env.NIMBUS_URL ?? "http://127.0.0.1:8080";
export const NIMBUS_PROJECT = process.env.NIMBUS_PROJECT ?? "default";

export interface GraphQLErrorEntry {
  message: string;
  path?: Array<string | number>;
  extensions?: { code?: string; [key: string]: unknown };
}

/** A request that answered with errors; `code` is the first error's `extensions.code`. */
export class GraphQLRequestError extends Error {
  readonly code: string | undefined;
  constructor(
    readonly operation: string,
    readonly status: number,
    readonly errors: GraphQLErrorEntry[],
  ) {
    const code = errors[0]?.extensions?.code;
    super(`${operation}: HTTP ${status}, ${code ?? "no code"}: ${errors.map((e) => e.message).join("; ")}`);
    this.name = "GraphQLRequestError";
    this.code = code;
  }
}

function operationName(document: DocumentNode): string {
  const operation = document.definitions.find((d): d is OperationDefinitionNode => d.kind === "OperationDefinition");
  return operation?.name?.value ?? "anonymous operation";
}

/**
 * Sends one operation over GraphQL-over-HTTP. The result and variable types come
 * from the document, so `request(PostDocument, { id })` returns a `PostQuery`.
 */
export async function request<TResult, TVariables>(
  document: TypedDocumentNode<TResult, TVariables>,
  variables: TVariables,
  headers: Record<string, string> = {},
): Promise<TResult> {
  const operation = operationName(document);
  const response = await fetch(`${NIMBUS_URL}/v1/graphql`, {
    method: "POST",
    headers: {
      "Content-Type": "application/json",
      Accept: "application/graphql-response+json",
      "X-Nimbus-Project": NIMBUS_PROJECT,
      ...headers,
    },
    body: JSON.stringify({ query: print(document), variables, operationName: operation }),
  });
  const text = await response.text();
  let body: { data?: TResult | null; errors?: GraphQLErrorEntry[] };
  try {
    body = JSON.parse(text) as typeof body;
  } catch {
    throw new Error(`${operation}: HTTP ${response.status}, not JSON: ${text.slice(0, 300)}`);
  }
  if (body.errors?.length) throw new GraphQLRequestError(operation, response.status, body.errors);
  if (!response.ok || body.data == null) {
    throw new Error(`${operation}: HTTP ${response.status} without data: ${text.slice(0, 300)}`);
  }
  return body.data;
}

/** `Authorization` for a user's session secret. */
export function bearer(secret: string): Record<string, string> {
  return { Authorization: `Bearer ${secret}` };
}
