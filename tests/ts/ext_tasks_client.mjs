// Drives the 2026-07-28 tasks extension with the official @modelcontextprotocol/ext-tasks client
// on @modelcontextprotocol/client 2.x: node ext_tasks_client.mjs <url> <token> <task_id>.
// Prints one JSON line per step: protocol, taskCreated, listening (the listen ack), then each
// notifications/tasks heard on the listen stream, then the settled result.
import { Client, StreamableHTTPClientTransport } from "@modelcontextprotocol/client";
import { createTaskSessionFromClient, resultFromTaskOutcome } from "@modelcontextprotocol/ext-tasks/client";

const TASKS = "io.modelcontextprotocol/tasks";
const VERSION = "2026-07-28";
const [url, token, taskId] = process.argv.slice(2);
const print = (o) => console.log(JSON.stringify(o));
const clientInfo = { name: "ext-tasks-interop", version: "1" };
const capabilities = { extensions: { [TASKS]: {} } };

// The package's V2 task traffic (tools/call, tasks/*) goes through a host-owned dispatcher: it
// hands over method and params; this gives them a JSON-RPC id and POSTs them, one request per
// POST, answered with JSON or with an SSE stream whose last frame is the answer.
let nextId = 1;
async function rawDispatch(request, options = {}) {
  request = { jsonrpc: "2.0", id: `ext-${nextId++}`, ...request };
  const response = await fetch(url, {
    method: "POST",
    signal: options.signal,
    headers: {
      Authorization: `Bearer ${token}`,
      Accept: "application/json, text/event-stream",
      "Content-Type": "application/json",
      "MCP-Protocol-Version": VERSION,
      "Mcp-Method": request.method,
      ...(request.params?.taskId ? { "Mcp-Name": request.params.taskId } : {}),
      ...(request.method === "tools/call" ? { "Mcp-Name": request.params.name } : {}),
    },
    body: JSON.stringify(request),
  });
  const text = await response.text();
  let message;
  if ((response.headers.get("content-type") ?? "").startsWith("text/event-stream")) {
    for (const line of text.split("\n")) {
      if (!line.startsWith("data:") || !line.slice(5).trim()) continue;
      const frame = JSON.parse(line.slice(5));
      if ("result" in frame || "error" in frame) message = frame;
    }
  } else {
    message = JSON.parse(text);
  }
  if (message === undefined) throw new Error(`no JSON-RPC answer to ${request.method}: ${text.slice(0, 200)}`);
  return "error" in message ? { kind: "error", error: message.error } : { kind: "result", result: message.result };
}

async function main() {
  const client = new Client(clientInfo, { capabilities, versionNegotiation: { mode: { pin: VERSION } } });
  await client.connect(
    new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers: { Authorization: `Bearer ${token}` } } }),
  );
  print({ type: "protocol", era: client.getProtocolEra(), tasks: client.getServerCapabilities()?.extensions?.[TASKS] ?? null });
  // Seen before the ext-tasks session (which chains to this handler and feeds its executions).
  client.fallbackNotificationHandler = async (n) => {
    if (n.method === "notifications/tasks") print({ type: "notification", taskId: n.params.taskId, status: n.params.status });
  };
  const session = createTaskSessionFromClient(client, {
    endpointId: url,
    rawDispatch,
    v2RequestFraming: { protocolVersion: VERSION, clientInfo, clientCapabilities: capabilities },
  });
  try {
    const execution = await session.callTool("enqueue_task", {
      task_type: "ext",
      payload: { from: "ext-tasks" },
      task_id: taskId,
    });
    print({ type: "taskCreated", kind: execution.kind, taskId: execution.handle?.taskId ?? null });
    const subscription = await client.listen({ taskIds: [taskId] });
    print({ type: "listening", honored: subscription.honoredFilter });
    const { outcome } = await execution.settle();
    const result = resultFromTaskOutcome(outcome);
    print({ type: "result", status: outcome.status, structuredContent: result.structuredContent, isError: result.isError ?? false });
    await subscription.close();
  } finally {
    await session.close();
    await client.close();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
