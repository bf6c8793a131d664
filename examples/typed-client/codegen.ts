import type { CodegenConfig } from "@graphql-codegen/cli";

// The schema is the live SDL of the project: it has a type per collection, so
// the generated types follow whatever `scripts/setup.ts` (or an admin) created.
const url = process.env.NIMBUS_URL ?? "http://127.0.0.1:8080";
const project = process.env.NIMBUS_PROJECT ?? "default";

const config: CodegenConfig = {
  overwrite: true,
  schema: [
    {
      [`${url}/v1/graphql/schema.graphql`]: {
        headers: { "X-Nimbus-Project": project },
        handleAsSDL: true,
      },
    },
  ],
  documents: ["src/**/*.graphql"],
  ignoreNoDocuments: false,
  generates: {
    "src/gql/": {
      preset: "client",
      presetConfig: { fragmentMasking: false },
      config: {
        // Every custom scalar must be mapped: an unmapped one fails generation.
        strictScalars: true,
        scalars: {
          DateTime: "string",
          JSON: "unknown",
          BigInt: "number",
          Upload: "File | Blob",
        },
        enumsAsTypes: true,
        useTypeImports: true,
        // ES modules under Node: relative imports with `.js`.
        emitLegacyCommonJSImports: false,
      },
    },
  },
};

export default config;
