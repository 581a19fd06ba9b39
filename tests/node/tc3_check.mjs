// The console's signing code (aigc_image/console/tc3.js) outside a secure context, as on a LAN
// address over plain http: its own SHA-256 against Node's, on inputs of every length around the
// block boundaries, and one signature for the Python test to compare with the server's.
//
//   node tc3_check.mjs SECRET_ID SECRET_KEY

import { createHash, randomBytes } from "node:crypto";

import { sha256Fallback, signedHeaders } from "../../aigc_image/console/tc3.js";

const [secretId, secretKey] = process.argv.slice(2);
const sha256Mismatches = [];
for (let length = 0; length < 300; length++) {
  const data = randomBytes(length);
  const ours = Buffer.from(sha256Fallback(new Uint8Array(data))).toString("hex");
  if (ours !== createHash("sha256").update(data).digest("hex")) sha256Mismatches.push(length);
}
const body = JSON.stringify({ PageNum: 1, PageSize: 1, Note: "灯塔 ✓" });
const timestamp = 1764000000;
const headers = await signedHeaders({
  secretId, secretKey, action: "DescribeAigcTaskList", body, host: "console.test:8000", timestamp, version: "2019-06-12",
});
const bodyHash = createHash("sha256").update(body).digest("hex");
console.log(JSON.stringify({ sha256Mismatches, headers, body, timestamp, bodyHash }));
