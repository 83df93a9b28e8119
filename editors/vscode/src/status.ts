// The status-bar item: server state, progress (model loading, warming a file) and the KV-cache figures of the
// active file, from the `pie/status` notification sent after each completion and from `pie/cacheStats`.
import * as vscode from 'vscode';
import {
  LanguageClient, Disposable, StaticFeature, FeatureState, ClientCapabilities,
} from 'vscode-languageclient/node';

/** Declares `experimental.pieStatusNotification`: the server sends `pie/status` only to clients that do. */
export class StatusNotificationFeature implements StaticFeature {
  fillClientCapabilities(capabilities: ClientCapabilities): void {
    capabilities.experimental = { ...(capabilities.experimental ?? {}), pieStatusNotification: true };
  }

  initialize(): void {}

  getState(): FeatureState {
    return { kind: 'static' };
  }

  clear(): void {}
}

/** `pie/cacheStats` result (docs/lsp-extensions.md). */
export interface CacheStats {
  cachedTokens: number;
  staleTokens: number;
  encodedTokens: number;
  shiftedTokens: number;
  reusedTokens: number;
  updates: number;
  lastUpdateMs: number;
  fullRecomputes: number;
}

/** `pie/status` notification, sent after each completion. */
export interface CompletionStatus {
  uri: string;
  encodedTokens: number;
  reusedTokens: number;
  latencyMs: number;
  firstTokenMs?: number;
  generatedTokens: number;
}

type State = 'starting' | 'ready' | 'stopped' | 'error';

const ICONS: Record<State, string> = {
  starting: '$(loading~spin)', ready: '$(zap)', stopped: '$(debug-stop)', error: '$(error)',
};

export class CacheStatusBar implements vscode.Disposable {
  private readonly item: vscode.StatusBarItem;
  private state: State = 'starting';
  private tooltip = 'pie-ls';
  private busy: string | undefined;
  private stats: CacheStats | undefined;
  private last: CompletionStatus | undefined;
  private client: LanguageClient | undefined;
  private subscriptions: (vscode.Disposable | Disposable)[] = [];
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly output: vscode.OutputChannel, private readonly enabled: () => boolean) {
    this.item = vscode.window.createStatusBarItem('pie-ls.status', vscode.StatusBarAlignment.Right, 100);
    this.item.name = 'pie-ls';
    this.item.command = 'pie-ls.showCacheStats';
    this.render();
  }

  attach(client: LanguageClient | undefined): void {
    this.subscriptions.forEach((s) => s.dispose());
    this.subscriptions = [];
    this.client = client;
    this.stats = undefined;
    this.last = undefined;
    if (!client) {
      return;
    }
    this.subscriptions.push(
      client.onNotification('pie/status', (status: CompletionStatus) => {
        this.last = status;
        this.output.appendLine(`completion: ${status.generatedTokens} tokens in ${Math.round(status.latencyMs)} ms ` +
          `(first token ${status.firstTokenMs === undefined ? '?' : Math.round(status.firstTokenMs)} ms; prompt ${status.reusedTokens} reused, ` +
          `${status.encodedTokens} encoded)`);
        this.render();
        this.schedule(0);
      }),
      vscode.window.onDidChangeActiveTextEditor(() => { this.stats = undefined; this.last = undefined; this.schedule(0); }),
      vscode.workspace.onDidChangeTextDocument((e) => {
        if (e.document === vscode.window.activeTextEditor?.document) {
          this.schedule(1000);
        }
      }),
    );
  }

  show(state: State, tooltip: string): void {
    this.state = state;
    this.tooltip = tooltip;
    if (state === 'ready') {
      this.schedule(0);
    }
    this.render();
  }

  progress(title: string, message: string | undefined): void {
    this.busy = message ? `${title}: ${message}` : title;
    this.render();
  }

  progressDone(title: string, message: string | undefined): void {
    this.busy = undefined;
    this.output.appendLine(`${title}${message ? `: ${message}` : ''}`);
    this.schedule(0);
    this.render();
  }

  refresh(): void {
    this.schedule(0);
    this.render();
  }

  /** The figures of the active file, in the output channel. */
  async showDetails(): Promise<void> {
    await this.poll();
    const uri = vscode.window.activeTextEditor?.document.uri.toString() ?? '(no active file)';
    this.output.appendLine(`pie/cacheStats ${uri}: ${this.stats ? JSON.stringify(this.stats) : 'no warm cache'}`);
    if (this.last) {
      this.output.appendLine(`last completion: ${JSON.stringify(this.last)}`);
    }
    this.output.show(true);
  }

  dispose(): void {
    clearTimeout(this.timer);
    this.subscriptions.forEach((s) => s.dispose());
    this.item.dispose();
  }

  private schedule(ms: number): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.poll(), ms);
  }

  private async poll(): Promise<void> {
    const editor = vscode.window.activeTextEditor;
    const client = this.client;
    if (!client?.isRunning() || !editor) {
      return;
    }
    try {
      this.stats = await client.sendRequest<CacheStats>('pie/cacheStats',
        { textDocument: { uri: editor.document.uri.toString() } });
    } catch {
      this.stats = undefined;   // not a warm document (no model, too large, not a supported language)
    }
    this.render();
  }

  private render(): void {
    if (!this.enabled()) {
      this.item.hide();
      return;
    }
    let text = `${ICONS[this.state]} pie-ls`;
    const lines = [this.tooltip];
    if (this.busy) {
      text = `$(loading~spin) pie-ls: ${this.busy.length > 40 ? this.busy.slice(0, 39) + '…' : this.busy}`;
      lines.push(this.busy);
    } else if (this.state === 'ready' && this.stats) {
      const s = this.stats;
      text += ` ${s.cachedTokens} tok warm`;
      if (this.last && this.last.uri === vscode.window.activeTextEditor?.document.uri.toString()) {
        text += ` · ${Math.round(this.last.latencyMs)} ms`;
      }
      const prompt = s.reusedTokens + s.encodedTokens;
      lines.push('', `KV cache of this file: ${s.cachedTokens} tokens (${s.staleTokens} stale)`,
        `since opened: ${s.updates} updates, ${s.encodedTokens} tokens encoded, ${s.reusedTokens} reused` +
          (prompt > 0 ? ` (${Math.round((100 * s.reusedTokens) / prompt)}%)` : '') +
          `, ${s.shiftedTokens} re-rotated, ${s.fullRecomputes} full recomputes`,
        `last update: ${s.lastUpdateMs.toFixed(1)} ms`);
    } else if (this.state === 'ready') {
      lines.push('', 'this file has no warm KV cache');
    }
    if (this.last) {
      const l = this.last;
      lines.push(`last completion: ${l.generatedTokens} tokens in ${Math.round(l.latencyMs)} ms` +
        (l.firstTokenMs !== undefined ? ` (first token ${Math.round(l.firstTokenMs)} ms)` : '') +
        `, prompt ${l.reusedTokens} reused / ${l.encodedTokens} encoded`);
    }
    lines.push('', 'Click for details in the output channel');
    this.item.text = text;
    this.item.tooltip = lines.join('\n');
    this.item.show();
  }
}
