// pie-ls for VS Code: starts the pie-ls language server (stdio) and shows what it offers.
//
// - LSP through vscode-languageclient 9: document sync, completions and code actions (extract method, resolved
//   lazily through codeAction/resolve) are the client's standard features.
// - Ghost text: vscode-languageclient 9 only has LSP 3.18 inline completions as a "proposed" feature, so this
//   extension registers its own InlineCompletionItemProvider that sends `textDocument/inlineCompletion`
//   (inline.ts), with a debounce and an on/off switch.
// - `$/progress` from the server (model loading, warming a file) becomes a cancellable notification (progress.ts).
// - A status-bar item shows the KV-cache figures from `pie/status` (which the server sends only because the
//   extension declares `experimental.pieStatusNotification`) and `pie/cacheStats` (status.ts).
import * as vscode from 'vscode';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { spawn } from 'child_process';
import {
  LanguageClient, LanguageClientOptions, ServerOptions, State, RevealOutputChannelOn,
} from 'vscode-languageclient/node';
import { InlineCompletionFeature } from './inline';
import { ProgressNotificationFeature } from './progress';
import { CacheStatusBar, StatusNotificationFeature } from './status';

export const LANGUAGES = [
  'python', 'rust', 'javascript', 'javascriptreact', 'typescript', 'typescriptreact', 'go', 'java', 'c', 'cpp',
];

let client: LanguageClient | undefined;
let output: vscode.OutputChannel;
let status: CacheStatusBar;

function config(): vscode.WorkspaceConfiguration {
  return vscode.workspace.getConfiguration('pie-ls');
}

/** The server binary: the `pie-ls.serverPath` setting, then `pie-ls` on PATH, then the build cache. */
export function findServer(): string | undefined {
  const configured = config().get<string>('serverPath', '').trim();
  if (configured) {
    return configured.replace(/^~(?=$|\/)/, os.homedir());
  }
  const exe = process.platform === 'win32' ? 'pie-ls.exe' : 'pie-ls';
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (dir && isExecutable(path.join(dir, exe))) {
      return path.join(dir, exe);
    }
  }
  const cache = process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache');
  const built = path.join(process.env.CARGO_TARGET_DIR || path.join(cache, 'pie-ls', 'target'), 'release', exe);
  return isExecutable(built) ? built : undefined;
}

function isExecutable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

/**
 * The server's settings (`initializationOptions` and `workspace/didChangeConfiguration`), under a `pie-ls` key.
 * Unset values are left out rather than sent as null: the server keeps its own defaults for them. Client-only
 * settings (server path, switches for the editor's features) are not sent.
 */
export function serverSettings(): object {
  const c = config();
  const pick = (keys: string[], prefix: string) => {
    const out: Record<string, unknown> = {};
    for (const key of keys) {
      const value = c.get<unknown>(`${prefix}.${key}`);
      if (value !== null && value !== undefined && value !== '') {
        out[key] = value;
      }
    }
    return out;
  };
  return {
    'pie-ls': {
      model: pick(['enabled', 'path', 'threads', 'contextLength', 'batchSize', 'maxWarmDocuments'], 'model'),
      documents: pick(['maxParseBytes', 'maxWarmBytes'], 'documents'),
      tests: {
        ...pick(['timeoutMs', 'memoryMb', 'suites'], 'tests'),
        ...(Object.keys(c.get<object>('commands.test') ?? {}).length ? { commands: c.get<object>('commands.test') } : {}),
      },
      selfDebug: pick(['rounds'], 'selfDebug'),
      perf: pick(['candidates', 'runs'], 'perf'),
      backend: pick(['kind', 'url', 'model', 'apiKeyEnv', 'timeoutMs', 'routingHeader', 'fim'], 'backend'),
      ...(c.get<object>('completion.backend') ? { completion: { backend: c.get<object>('completion.backend') } } : {}),
      ...(c.get<object>('actions.backend') ? { actions: { backend: c.get<object>('actions.backend') } } : {}),
    },
  };
}

async function startClient(context: vscode.ExtensionContext): Promise<void> {
  const command = findServer();
  if (!command) {
    status.show('error', 'pie-ls binary not found: set pie-ls.serverPath or put pie-ls on PATH');
    const pick = await vscode.window.showErrorMessage(
      'pie-ls: the server binary was not found. Put `pie-ls` on PATH or set `pie-ls.serverPath`.',
      'Open Settings');
    if (pick) {
      void vscode.commands.executeCommand('workbench.action.openSettings', 'pie-ls.serverPath');
    }
    return;
  }
  const args = config().get<string[]>('serverArgs', []);
  output.appendLine(`starting ${command} ${args.join(' ')}`);
  const serverOptions: ServerOptions = {
    run: { command, args },
    debug: { command, args: [...args, '--log-level', 'pie_ls=debug'] },
  };
  const clientOptions: LanguageClientOptions = {
    documentSelector: LANGUAGES.flatMap((language) => [
      { scheme: 'file', language }, { scheme: 'untitled', language },
    ]),
    initializationOptions: serverSettings(),
    outputChannel: output,
    revealOutputChannelOn: RevealOutputChannelOn.Never,
    middleware: {
      provideCompletionItem: (document, position, ctx, token, next) =>
        config().get<boolean>('completions.enabled', true) ? next(document, position, ctx, token) : undefined,
      provideCodeActions: (document, range, ctx, token, next) =>
        config().get<boolean>('codeActions.enabled', true) ? next(document, range, ctx, token) : undefined,
    },
  };
  const c = new LanguageClient('pie-ls', 'pie-ls', serverOptions, clientOptions);
  c.registerFeature(new InlineCompletionFeature(c, () => config()));
  c.registerFeature(new ProgressNotificationFeature(c, status));
  c.registerFeature(new StatusNotificationFeature());
  c.onDidChangeState((e) => {
    if (e.newState === State.Running) {
      status.show('ready', 'pie-ls: server running');
    } else if (e.newState === State.Stopped) {
      status.show('stopped', 'pie-ls: server stopped');
    }
  });
  client = c;
  status.attach(c);
  status.show('starting', `pie-ls: starting ${command}`);
  try {
    await c.start();
    output.appendLine(`pie-ls started: ${JSON.stringify(c.initializeResult?.serverInfo ?? {})}; capabilities: ` +
      Object.keys(c.initializeResult?.capabilities ?? {}).join(', '));
  } catch (err) {
    status.show('error', `pie-ls failed to start: ${err}`);
    output.appendLine(`pie-ls failed to start: ${err}`);
    void vscode.window.showErrorMessage(`pie-ls failed to start: ${err}`, 'Show Output').then((pick) => {
      if (pick) {
        output.show();
      }
    });
  }
}

async function stopClient(): Promise<void> {
  const c = client;
  client = undefined;
  status.attach(undefined);
  if (c) {
    await c.stop().catch(() => undefined);
  }
}

/** `pie-ls model fetch [--test]`, streamed to the output channel, in a cancellable notification. */
async function fetchModel(test: boolean): Promise<void> {
  const command = findServer();
  if (!command) {
    void vscode.window.showErrorMessage('pie-ls: the server binary was not found (pie-ls.serverPath or PATH).');
    return;
  }
  const args = ['model', 'fetch', ...(test ? ['--test'] : [])];
  output.show(true);
  output.appendLine(`$ ${command} ${args.join(' ')}`);
  const code = await vscode.window.withProgress(
    { location: vscode.ProgressLocation.Notification, title: `pie-ls: fetching the ${test ? 'test' : 'default'} model`, cancellable: true },
    (progress, token) => new Promise<number | null>((resolve) => {
      const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
      const onData = (data: Buffer) => {
        const text = data.toString();
        output.append(text);
        const last = text.trim().split(/\r|\n/).pop();
        if (last) {
          progress.report({ message: last.slice(0, 120) });
        }
      };
      child.stdout.on('data', onData);
      child.stderr.on('data', onData);
      token.onCancellationRequested(() => child.kill('SIGTERM'));
      child.on('error', (err) => { output.appendLine(String(err)); resolve(-1); });
      child.on('close', (code) => resolve(code));
    }));
  if (code === 0) {
    const pick = await vscode.window.showInformationMessage(
      'pie-ls: model ready. Restart the server to load it?', 'Restart');
    if (pick) {
      await vscode.commands.executeCommand('pie-ls.restartServer');
    }
  } else {
    void vscode.window.showErrorMessage(`pie-ls: model fetch failed (exit ${code}); see the output channel.`);
  }
}

async function showDocumentRequest(method: string): Promise<void> {
  const editor = vscode.window.activeTextEditor;
  if (!client || !editor) {
    void vscode.window.showWarningMessage('pie-ls: no running server or no active editor.');
    return;
  }
  try {
    const result = await client.sendRequest(method, { textDocument: { uri: editor.document.uri.toString() } });
    output.appendLine(`${method} ${editor.document.uri.toString()}: ${JSON.stringify(result, null, 2)}`);
    output.show(true);
  } catch (err) {
    void vscode.window.showWarningMessage(`pie-ls: ${method} failed: ${err instanceof Error ? err.message : err}`);
  }
}

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  output = vscode.window.createOutputChannel('pie-ls');
  status = new CacheStatusBar(output, () => config().get<boolean>('statusBar.enabled', true));
  context.subscriptions.push(output, status);
  context.subscriptions.push(
    vscode.commands.registerCommand('pie-ls.fetchModel', () => fetchModel(false)),
    vscode.commands.registerCommand('pie-ls.fetchTestModel', () => fetchModel(true)),
    vscode.commands.registerCommand('pie-ls.showOutput', () => output.show()),
    vscode.commands.registerCommand('pie-ls.showCacheStats', () => status.showDetails()),
    vscode.commands.registerCommand('pie-ls.showDocumentState', () => showDocumentRequest('pie/documentState')),
    vscode.commands.registerCommand('pie-ls.restartServer', async () => {
      await stopClient();
      await startClient(context);
    }),
    vscode.workspace.onDidChangeConfiguration(async (e) => {
      if (!e.affectsConfiguration('pie-ls')) {
        return;
      }
      if (e.affectsConfiguration('pie-ls.serverPath') || e.affectsConfiguration('pie-ls.serverArgs')) {
        await stopClient();
        await startClient(context);
      } else if (client?.isRunning()) {
        await client.sendNotification('workspace/didChangeConfiguration', { settings: serverSettings() });
      }
      status.refresh();
    }),
  );
  await startClient(context);
}

export function deactivate(): Thenable<void> | undefined {
  return stopClient();
}
