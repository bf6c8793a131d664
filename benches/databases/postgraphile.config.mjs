// PostGraphile for the scopes `owner` and `team` of benches/databases.sh: the amber
// preset, plus what its JWT guide asks the server to do, verifying the request's
// `Authorization: Bearer` JWT (HS256, secret BENCH_JWT_SECRET) and handing its
// `user_id` claim to PostgreSQL as jwt.claims.user_id, with the role bench_user,
// so that row-level security decides what each request reads. No valid token, no
// user: the request runs as bench_user and reads nothing.
import { createHmac, timingSafeEqual } from "node:crypto";
import { PostGraphileAmberPreset } from "postgraphile/presets/amber";
import { makePgService } from "postgraphile/adaptors/pg";

const secret = process.env.BENCH_JWT_SECRET;

function claims(header) {
  const match = /^Bearer ([\w-]+)\.([\w-]+)\.([\w-]+)$/.exec(header ?? "");
  if (!match) return null;
  const [, head, body, signature] = match;
  const expected = createHmac("sha256", secret).update(`${head}.${body}`).digest();
  const given = Buffer.from(signature, "base64url");
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return null;
  if (JSON.parse(Buffer.from(head, "base64url").toString()).alg !== "HS256") return null;
  const payload = JSON.parse(Buffer.from(body, "base64url").toString());
  if (typeof payload.exp === "number" && payload.exp * 1000 < Date.now()) return null;
  return payload;
}

export default {
  extends: [PostGraphileAmberPreset],
  pgServices: [makePgService({ connectionString: process.env.BENCH_PG_URL, schemas: ["public"] })],
  grafast: {
    context(requestContext) {
      const request = requestContext.node?.req;
      const user = claims(request?.headers?.authorization);
      return {
        pgSettings: {
          role: "bench_user",
          "jwt.claims.user_id": user ? String(user.user_id) : "",
        },
      };
    },
  },
};
