// Ghost text from `textDocument/inlineCompletion` (LSP 3.18).
//
// vscode-languageclient 9 ships inline completions only as a proposed feature; this static feature does the job
// itself so that it can debounce keystrokes, honour `pie-ls.inlineCompletions.enabled` and default the range to
// an insertion at the cursor when the server leaves it out.
import * as vscode from 'vscode';
import {
  LanguageClient, StaticFeature, FeatureState, ClientCapabilities, ServerCapabilities, DocumentSelector,
  InlineCompletionRequest, InlineCompletionItem as ProtoItem, InlineCompletionList as ProtoList,
} from 'vscode-languageclient/node';

export class InlineCompletionFeature implements StaticFeature {
  private registration: vscode.Disposable | undefined;
  /** Requests sent and items shown, for the status bar's details. */
  public requests = 0;
  public items = 0;

  constructor(private readonly client: LanguageClient,
              private readonly settings: () => vscode.WorkspaceConfiguration) {}

  fillClientCapabilities(capabilities: ClientCapabilities): void {
    const textDocument = (capabilities.textDocument ??= {}) as Record<string, unknown>;
    textDocument.inlineCompletion = { dynamicRegistration: false };
  }

  initialize(capabilities: ServerCapabilities, selector: DocumentSelector | undefined): void {
    if (!(capabilities as { inlineCompletionProvider?: unknown }).inlineCompletionProvider || !selector) {
      return;
    }
    this.registration?.dispose();
    this.registration = vscode.languages.registerInlineCompletionItemProvider(
      this.client.protocol2CodeConverter.asDocumentSelector(selector),
      { provideInlineCompletionItems: (document, position, context, token) =>
          this.provide(document, position, context, token) });
  }

  getState(): FeatureState {
    return { kind: 'static' };
  }

  clear(): void {
    this.registration?.dispose();
    this.registration = undefined;
  }

  private async provide(document: vscode.TextDocument, position: vscode.Position,
                        context: vscode.InlineCompletionContext, token: vscode.CancellationToken)
      : Promise<vscode.InlineCompletionItem[] | undefined> {
    const settings = this.settings();
    if (!settings.get<boolean>('inlineCompletions.enabled', true) || !this.client.isRunning()) {
      return undefined;
    }
    const debounce = settings.get<number>('inlineCompletions.debounceMs', 75);
    if (debounce > 0 && context.triggerKind === vscode.InlineCompletionTriggerKind.Automatic) {
      await new Promise((resolve) => setTimeout(resolve, debounce));
      if (token.isCancellationRequested) {
        return undefined;
      }
    }
    const params = this.client.code2ProtocolConverter.asInlineCompletionParams(document, position, context);
    let result: ProtoList | ProtoItem[] | null;
    try {
      this.requests++;
      result = await this.client.sendRequest(InlineCompletionRequest.type, params, token);
    } catch (err) {
      return this.client.handleFailedRequest(InlineCompletionRequest.type, token, err, undefined);
    }
    if (!result || token.isCancellationRequested) {
      return undefined;
    }
    const items = Array.isArray(result) ? result : result.items;
    const converted = items.map((item) => {
      const text = typeof item.insertText === 'string'
        ? item.insertText
        : new vscode.SnippetString(item.insertText.value);
      const range = item.range
        ? this.client.protocol2CodeConverter.asRange(item.range)
        : new vscode.Range(position, position);
      const out = new vscode.InlineCompletionItem(text, range);
      if (item.filterText !== undefined) {
        out.filterText = item.filterText;
      }
      if (item.command) {
        out.command = this.client.protocol2CodeConverter.asCommand(item.command);
      }
      return out;
    });
    this.items += converted.length;
    return converted;
  }
}
