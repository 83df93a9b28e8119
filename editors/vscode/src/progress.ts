// `$/progress` from the server (loading the model, warming a file) as a VS Code notification, with a Cancel
// button that sends `window/workDoneProgress/cancel` when the server marks the work cancellable.
//
// vscode-languageclient's own progress support shows server-initiated progress only as a status-bar spinner.
// This feature answers `window/workDoneProgress/create` itself (its handler is installed after the client's,
// so it replaces it) and opens a notification when the work lasts more than SHOW_AFTER_MS, so that short
// warm-ups do not flash on screen; the status-bar item shows every one of them.
import * as vscode from 'vscode';
import {
  LanguageClient, StaticFeature, FeatureState, ClientCapabilities, ServerCapabilities,
  WorkDoneProgress, WorkDoneProgressCreateRequest, WorkDoneProgressCancelNotification,
  WorkDoneProgressBegin, WorkDoneProgressReport, WorkDoneProgressEnd, ProgressToken, Disposable,
} from 'vscode-languageclient/node';
import { CacheStatusBar } from './status';

const SHOW_AFTER_MS = 500;

export class ProgressNotificationFeature implements StaticFeature {
  private disposables: Disposable[] = [];

  constructor(private readonly client: LanguageClient, private readonly status: CacheStatusBar) {}

  fillClientCapabilities(capabilities: ClientCapabilities): void {
    (capabilities.window ??= {}).workDoneProgress = true;
  }

  initialize(_capabilities: ServerCapabilities): void {
    this.disposables.push(this.client.onRequest(WorkDoneProgressCreateRequest.type, (params) => {
      this.track(params.token);
    }));
  }

  getState(): FeatureState {
    return { kind: 'static' };
  }

  clear(): void {
    this.disposables.forEach((d) => d.dispose());
    this.disposables = [];
  }

  private track(token: ProgressToken): void {
    let title = '';
    let message: string | undefined;
    let reporter: vscode.Progress<{ message?: string }> | undefined;
    let finish: (() => void) | undefined;
    const done = new Promise<void>((resolve) => { finish = resolve; });
    let timer: NodeJS.Timeout | undefined;
    const sub = this.client.onProgress(WorkDoneProgress.type, token, (value) => {
      switch (value.kind) {
        case 'begin': {
          const begin = value as WorkDoneProgressBegin;
          title = begin.title.replace(/^pie-ls:\s*/, '');
          message = begin.message;
          this.status.progress(title, message);
          timer = setTimeout(() => show(begin.cancellable === true), SHOW_AFTER_MS);
          break;
        }
        case 'report': {
          const report = value as WorkDoneProgressReport;
          message = report.message ?? message;
          this.status.progress(title, message);
          reporter?.report({ message });
          break;
        }
        case 'end': {
          const end = value as WorkDoneProgressEnd;
          clearTimeout(timer);
          this.status.progressDone(title, end.message);
          sub.dispose();
          finish?.();
          break;
        }
      }
    });
    const show = (cancellable: boolean) => {
      void vscode.window.withProgress(
        { location: vscode.ProgressLocation.Notification, title: `pie-ls: ${title}`, cancellable },
        async (progress, cancel) => {
          reporter = progress;
          if (message) {
            progress.report({ message });
          }
          cancel.onCancellationRequested(() => {
            void this.client.sendNotification(WorkDoneProgressCancelNotification.type, { token });
          });
          await done;
        });
    };
  }
}
