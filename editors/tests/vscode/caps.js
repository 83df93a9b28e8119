// Prints the server's capabilities (the `initialize` result) as JSON: the suites use it to tell which
// feature-dependent cases the binary can serve. Loads no model. Usage: node caps.js /path/to/pie-ls
const { spawn } = require('child_process');
const server = spawn(process.argv[2], [], { stdio: ['pipe', 'pipe', 'ignore'] });
const send = (msg) => {
  const body = JSON.stringify({ jsonrpc: '2.0', ...msg });
  server.stdin.write(`Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
};
let buf = Buffer.alloc(0);
server.stdout.on('data', (chunk) => {
  buf = Buffer.concat([buf, chunk]);
  for (;;) {
    const head = buf.indexOf('\r\n\r\n');
    if (head < 0) return;
    const len = Number(/Content-Length: (\d+)/i.exec(buf.slice(0, head).toString())[1]);
    if (buf.length < head + 4 + len) return;
    const msg = JSON.parse(buf.slice(head + 4, head + 4 + len).toString());
    buf = buf.slice(head + 4 + len);
    if (msg.id === 1) {
      process.stdout.write(JSON.stringify(msg.result.capabilities) + '\n');
      send({ id: 2, method: 'shutdown' });
    } else if (msg.id === 2) {
      send({ method: 'exit' });
    }
  }
});
server.on('exit', () => process.exit(0));
setTimeout(() => { server.kill(); process.exit(1); }, 10000);
// The server advertises only what the client declares: declare what the extension declares (inline.ts, status.ts)
// on top of vscode-languageclient's code action support.
const capabilities = {
  textDocument: {
    inlineCompletion: { dynamicRegistration: false },
    codeAction: {
      codeActionLiteralSupport: { codeActionKind: { valueSet: ['', 'quickfix', 'refactor', 'refactor.extract', 'refactor.rewrite'] } },
      dataSupport: true, disabledSupport: true, resolveSupport: { properties: ['edit'] },
    },
  },
  experimental: { pieStatusNotification: true },
};
send({ id: 1, method: 'initialize', params: { processId: process.pid, rootUri: null, capabilities,
  initializationOptions: { model: { enabled: false } } } });
