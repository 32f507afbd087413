// Drives the 2025-11-25 tasks lane with the official TypeScript SDK 1.x:
// node tasks_client.cjs <url> <token> <task_id>; prints one JSON line per stream message.
const { Client } = require("@modelcontextprotocol/sdk/client/index.js");
const { StreamableHTTPClientTransport } = require("@modelcontextprotocol/sdk/client/streamableHttp.js");

async function main() {
  const [url, token, taskId] = process.argv.slice(2);
  const transport = new StreamableHTTPClientTransport(new URL(url), {
    requestInit: { headers: { Authorization: `Bearer ${token}` } },
  });
  const client = new Client({ name: "ts-tasks", version: "1" });
  await client.connect(transport);
  const print = (o) => console.log(JSON.stringify(o));
  print({ type: "protocol", version: transport.protocolVersion, tasks: client.getServerCapabilities().tasks ?? null });
  await client.listTools(); // learns which tools take tasks (execution.taskSupport) and their output schemas
  const stream = client.experimental.tasks.callToolStream({
    name: "enqueue_task",
    arguments: { task_type: "ts", payload: { from: "typescript" }, task_id: taskId },
  });
  for await (const message of stream) {
    if (message.type === "taskCreated") print({ type: "taskCreated", taskId: message.task.taskId, status: message.task.status });
    else if (message.type === "taskStatus") print({ type: "taskStatus", status: message.task.status });
    else if (message.type === "result") print({ type: "result", structuredContent: message.result.structuredContent, isError: message.result.isError ?? false });
    else if (message.type === "error") print({ type: "error", message: String(message.error && message.error.message) });
  }
  await client.close();
}

main().catch((e) => { console.error(e); process.exit(1); });
