// Drives a live aigc-image server with the official Node.js SDK, its settings left at their
// defaults (TC3-HMAC-SHA256, POST, JSON) except the endpoint and, for plain HTTP, the protocol.
// Usage: node mps_client.js <endpoint> <secretId> <secretKey> [http://|https://]
// Prints one JSON object: what each action answered, or the error code it raised.
"use strict";
const tencentcloud = require("tencentcloud-sdk-nodejs-mps");

const [endpoint, secretId, secretKey, protocol = "http://"] = process.argv.slice(2);
const client = new tencentcloud.mps.v20190612.Client({
  credential: { secretId, secretKey },
  region: "ap-guangzhou",
  profile: { httpProfile: { endpoint, protocol } },
});

async function main() {
  const result = {};
  try {
    const created = await client.CreateAigcImageTask({ Prompt: "a lighthouse at dusk", OutputImageCount: 1 });
    result.taskId = created.TaskId;
    const deadline = Date.now() + 120000;
    let reply;
    do {
      reply = await client.DescribeAigcImageTask({ TaskId: created.TaskId });
      if (reply.Status === "DONE" || reply.Status === "FAIL") break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    } while (Date.now() < deadline);
    result.status = reply.Status;
    result.imageUrls = reply.ImageUrls;
    const status = await client.DescribeAigcTaskStatus({ TaskId: created.TaskId });
    result.taskStatus = status.TaskStatus;
    const listed = await client.DescribeAigcTaskList({ PageNum: 1, PageSize: 10 });
    result.listed = listed.Tasks.map((task) => task.TaskId);
  } catch (error) {
    result.error = { code: error.code, message: error.message, requestId: error.requestId };
  }
  process.stdout.write(JSON.stringify(result) + "\n");
}

main();
