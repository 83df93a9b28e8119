-- pie-ls for Neovim 0.11+: the language server that runs a code LLM locally and keeps its KV cache warm.
--
--   require("pie-ls").setup({ settings = { model = { threads = 2 } } })
--
-- Registers the server with vim.lsp.config/vim.lsp.enable, turns on vim.lsp.completion and ghost text
-- (vim.lsp.inline_completion on 0.12, the plugin's own extmarks on 0.11) in the buffers it attaches to, shows
-- server progress, and adds :PieStatus, :PieFetchModel, :PieCancel and :checkhealth pie-ls.
local M = {}

M.name = "pie_ls"

local default_filetypes = {
  "python", "rust", "javascript", "javascriptreact", "typescript", "typescriptreact", "go", "java", "c", "cpp",
}

---@class pie_ls.Options
M.defaults = {
  --- Server command. nil: `pie-ls` on PATH, then $CARGO_TARGET_DIR or ~/.cache/pie-ls/target/release/pie-ls.
  cmd = nil, ---@type string[]?
  filetypes = default_filetypes,
  root_markers = { ".git", "Cargo.toml", "pyproject.toml", "package.json", "go.mod" },
  --- Server settings (docs/editors.md): model = { path, threads, contextLength, batchSize, maxWarmDocuments,
  --- enabled }, documents = { maxParseBytes, maxWarmBytes }, commands = { test = { python = "pytest -q" },
  --- bench = { ... } }, backend = { kind, url, model, apiKeyEnv, timeoutMs, routingHeader, fim } (docs/backends.md).
  --- Sent as initializationOptions and workspace/didChangeConfiguration.
  settings = {},
  completion = {
    enabled = true, -- vim.lsp.completion in attached buffers
    -- open the menu on the server's trigger characters; nil: only where there is no ghost text, which already
    -- shows the same suggestion as you type
    autotrigger = nil,
    trigger_key = "<C-Space>", -- insert-mode key that asks for completions (vim.lsp.completion.get); false: none
  },
  inline_completion = {
    enabled = true, -- ghost text
    native = nil, -- nil: vim.lsp.inline_completion when present (0.12+); false: the plugin's extmarks
    debounce_ms = 150, -- the plugin's extmarks only (0.12's own debounce is 200 ms)
    accept_key = "<Tab>", -- insert-mode key that accepts the ghost text (falls back to the key itself); false: none
  },
  code_actions = {
    key = nil, -- e.g. "<leader>ca": vim.lsp.buf.code_action() in normal and visual mode (0.11 maps `gra` already)
  },
  progress = true, -- echo the server's $/progress (model loading, warming a file) in the message area
  on_attach = nil, ---@type fun(client: vim.lsp.Client, bufnr: integer)?
}

M.options = vim.deepcopy(M.defaults)

--- Per client: the last `pie/status` (after each completion), keyed by URI, and live progress tokens.
M.state = { status = {}, progress = {} }

local function is_executable(path)
  return path and path ~= "" and vim.fn.executable(path) == 1
end

--- The server command this configuration will start.
---@return string[]?
function M.cmd()
  if M.options.cmd then
    return M.options.cmd
  end
  if is_executable("pie-ls") then
    return { "pie-ls" }
  end
  local cache = vim.env.XDG_CACHE_HOME or (vim.env.HOME .. "/.cache")
  local target = vim.env.CARGO_TARGET_DIR or (cache .. "/pie-ls/target")
  local built = target .. "/release/pie-ls"
  if is_executable(built) then
    return { built }
  end
  return nil
end

--- Drops nil-like values so the server keeps its defaults for them.
local function clean(value)
  if type(value) ~= "table" or vim.islist(value) then
    return value
  end
  local out = {}
  for k, v in pairs(value) do
    if v ~= vim.NIL and v ~= "" then
      out[k] = clean(v)
    end
  end
  return out
end

function M.settings()
  return clean(M.options.settings or {})
end

--- The attached pie-ls client of a buffer (0: current).
---@return vim.lsp.Client?
function M.client(bufnr)
  return vim.lsp.get_clients({ bufnr = bufnr or 0, name = M.name })[1]
end

local function inline_native()
  local native = M.options.inline_completion.native
  if native == nil then
    native = vim.lsp.inline_completion ~= nil
  end
  return native and vim.lsp.inline_completion ~= nil
end

--- Accepts the ghost text in the current buffer; false when there is none.
function M.accept_ghost_text()
  if inline_native() then
    return vim.lsp.inline_completion.get()
  end
  return require("pie-ls.ghost").accept()
end

local function on_attach(client, bufnr)
  local opts = M.options
  if opts.completion.enabled and client:supports_method("textDocument/completion") then
    local autotrigger = opts.completion.autotrigger
    if autotrigger == nil then
      autotrigger = not (opts.inline_completion.enabled and client:supports_method("textDocument/inlineCompletion"))
    end
    vim.lsp.completion.enable(true, client.id, bufnr, { autotrigger = autotrigger })
    -- Neovim inserts only the first word of a plain-text item (its `word`); the server's items carry the
    -- model's whole suggestion, so on accept insert the rest of it too.
    vim.api.nvim_create_autocmd("CompleteDone", {
      group = vim.api.nvim_create_augroup("pie-ls.complete." .. bufnr, { clear = true }),
      buffer = bufnr,
      callback = function()
        M._complete_rest(client, bufnr)
      end,
    })
    if opts.completion.trigger_key then
      vim.keymap.set("i", opts.completion.trigger_key, function() vim.lsp.completion.get() end,
        { buffer = bufnr, desc = "pie-ls: completions" })
    end
  end
  if opts.inline_completion.enabled and client:supports_method("textDocument/inlineCompletion") then
    if inline_native() then
      vim.lsp.inline_completion.enable(true, { bufnr = bufnr })
    else
      require("pie-ls.ghost").attach(client, bufnr, opts.inline_completion.debounce_ms)
    end
    local key = opts.inline_completion.accept_key
    if key then
      vim.keymap.set("i", key, function()
        if not M.accept_ghost_text() then
          return vim.api.nvim_replace_termcodes(key, true, false, true)
        end
      end, { buffer = bufnr, expr = true, desc = "pie-ls: accept the ghost text" })
    end
  end
  if opts.code_actions.key then
    vim.keymap.set({ "n", "x" }, opts.code_actions.key, vim.lsp.buf.code_action,
      { buffer = bufnr, desc = "pie-ls: code actions" })
  end
  if opts.on_attach then
    opts.on_attach(client, bufnr)
  end
end

function M._complete_rest(client, bufnr)
  local event = vim.v.event or {}
  if event.reason and event.reason ~= "accept" then
    return
  end
  local item = vim.v.completed_item or {}
  local lsp_item = vim.tbl_get(item, "user_data", "nvim", "lsp", "completion_item")
  if not lsp_item or vim.tbl_get(item, "user_data", "nvim", "lsp", "client_id") ~= client.id
    or lsp_item.insertTextFormat == 2 then
    return
  end
  local new_text = lsp_item.textEdit and lsp_item.textEdit.newText or lsp_item.insertText
  local word = item.word or ""
  if type(new_text) ~= "string" or #new_text <= #word or new_text:sub(1, #word) ~= word then
    return
  end
  local row, col = unpack(vim.api.nvim_win_get_cursor(0))
  local line = vim.api.nvim_get_current_line()
  if line:sub(col - #word + 1, col) ~= word then
    return -- not what Neovim inserted: leave the buffer alone
  end
  local lines = vim.split(new_text:sub(#word + 1), "\n", { plain = true })
  vim.api.nvim_buf_set_text(bufnr, row - 1, col, row - 1, col, lines)
  vim.api.nvim_win_set_cursor(0, { row + #lines - 1, (#lines == 1 and col or 0) + #lines[#lines] })
end

local function on_status(_, result, ctx)
  if type(result) == "table" and result.uri then
    M.state.status[result.uri] = vim.tbl_extend("force", result, { client_id = ctx.client_id, at = os.time() })
    vim.api.nvim_exec_autocmds("User", { pattern = "PieStatus", data = result, modeline = false })
    vim.cmd.redrawstatus()
  end
end

local function echo_progress(p, message)
  vim.api.nvim_echo({ { ("pie-ls: %s%s"):format(p.title or "", message and (": " .. message) or "") } }, false, {})
end

--- $/progress from the server: kept in M.state.progress (statusline, :PieStatus, :PieCancel) and echoed when
--- the work lasts over half a second, so that the short warm-up after each file change stays quiet.
local function on_progress(ev)
  local client = vim.lsp.get_client_by_id(ev.data.client_id)
  if not client or client.name ~= M.name then
    return
  end
  local params = ev.data.params
  local value = params.value or {}
  local token = params.token
  if value.kind == "begin" then
    local title = (value.title or ""):gsub("^pie%-ls:%s*", "")
    local p = { client_id = client.id, title = title, message = value.message, cancellable = value.cancellable }
    M.state.progress[token] = p
    vim.cmd.redrawstatus()
    vim.defer_fn(function()
      if M.state.progress[token] == p and M.options.progress then
        p.shown = true
        echo_progress(p, p.message)
      end
    end, 500)
  elseif value.kind == "report" and M.state.progress[token] then
    local p = M.state.progress[token]
    p.message = value.message or p.message
    if p.shown then
      echo_progress(p, p.message)
    end
  elseif value.kind == "end" then
    local p = M.state.progress[token]
    M.state.progress[token] = nil
    vim.cmd.redrawstatus()
    if p and p.shown then
      echo_progress(p, value.message or "done")
    end
  end
end

--- Sends window/workDoneProgress/cancel for every cancellable task of the server (e.g. a long warm-up).
function M.cancel()
  local n = 0
  for token, p in pairs(M.state.progress) do
    local client = vim.lsp.get_client_by_id(p.client_id)
    if client and p.cancellable then
      client:notify("window/workDoneProgress/cancel", { token = token })
      n = n + 1
    end
  end
  vim.notify(("pie-ls: cancel sent for %d running task(s)"):format(n))
end

local function request(method, bufnr, timeout)
  local client = M.client(bufnr)
  if not client then
    return nil, "pie-ls is not attached to this buffer"
  end
  local res = client:request_sync(method, { textDocument = vim.lsp.util.make_text_document_params(bufnr) },
    timeout or 2000, bufnr)
  if not res then
    return nil, "timeout"
  end
  if res.err then
    return nil, res.err.message
  end
  return res.result
end
M.request = request

--- Lines describing the server and the current buffer, for :PieStatus and statuslines.
---@return string[]
function M.status_lines(bufnr)
  bufnr = bufnr == nil and vim.api.nvim_get_current_buf() or bufnr
  local lines = {}
  local client = M.client(bufnr)
  if not client then
    local cmd = M.cmd()
    lines[#lines + 1] = "pie-ls: not attached to this buffer"
      .. (cmd and (" (server: " .. table.concat(vim.tbl_map(tostring, cmd), " ") .. ")") or " (server binary not found; :checkhealth pie-ls)")
    return lines
  end
  local info = client.server_info or {}
  lines[#lines + 1] = ("pie-ls %s: client %d, %s, cmd %s"):format(info.version or "?", client.id,
    client:is_stopped() and "stopped" or "running", table.concat(vim.tbl_map(tostring, client.config.cmd or {}), " "))
  for _, p in pairs(M.state.progress) do
    lines[#lines + 1] = ("  busy: %s%s"):format(p.title or "", p.message and (": " .. p.message) or "")
  end
  local state, err = request("pie/documentState", bufnr)
  if state then
    lines[#lines + 1] = ("  document: version %d, %d lines, language %s, syntax %s (%s errors)"):format(
      state.version, state.lineCount, state.languageId, tostring(state.syntaxLanguage or "none"),
      tostring(state.syntaxErrors == vim.NIL and "-" or state.syntaxErrors))
  else
    lines[#lines + 1] = "  document: " .. tostring(err)
  end
  local stats, serr = request("pie/cacheStats", bufnr)
  if stats then
    local prompt = (stats.reusedTokens or 0) + (stats.encodedTokens or 0)
    lines[#lines + 1] = ("  KV cache: %d tokens (%d stale); %d updates, %d encoded, %d reused%s, %d re-rotated, "
      .. "%d full recomputes; last update %.1f ms"):format(stats.cachedTokens, stats.staleTokens, stats.updates,
      stats.encodedTokens, stats.reusedTokens,
      prompt > 0 and (" (" .. math.floor(100 * stats.reusedTokens / prompt + 0.5) .. "%)") or "",
      stats.shiftedTokens, stats.fullRecomputes, stats.lastUpdateMs)
  else
    lines[#lines + 1] = "  KV cache: " .. tostring(serr)
  end
  local last = M.state.status[vim.uri_from_bufnr(bufnr)]
  if last then
    lines[#lines + 1] = ("  last completion: %d tokens in %d ms (first token %s ms), prompt %d reused / %d encoded")
      :format(last.generatedTokens or 0, math.floor(last.latencyMs or 0), tostring(last.firstTokenMs and math.floor(last.firstTokenMs) or "?"),
        last.reusedTokens or 0, last.encodedTokens or 0)
  end
  local features = {}
  for _, m in ipairs({ "textDocument/completion", "textDocument/inlineCompletion", "textDocument/codeAction" }) do
    features[#features + 1] = m:gsub("textDocument/", "") .. (client:supports_method(m) and " on" or " off")
  end
  lines[#lines + 1] = "  features: " .. table.concat(features, ", ")
  return lines
end

--- A short string for a statusline: `pie-ls 1234 tok · 85 ms`.
function M.statusline()
  local bufnr = vim.api.nvim_get_current_buf()
  if not M.client(bufnr) then
    return ""
  end
  for _, p in pairs(M.state.progress) do
    return "pie-ls: " .. (p.title or "busy")
  end
  local last = M.state.status[vim.uri_from_bufnr(bufnr)]
  return last and ("pie-ls %d ms"):format(math.floor(last.latencyMs or 0)) or "pie-ls"
end

--- `pie-ls model fetch [--test]`, asynchronously.
function M.fetch_model(test)
  local cmd = M.cmd()
  if not cmd then
    vim.notify("pie-ls: server binary not found (:checkhealth pie-ls)", vim.log.levels.ERROR)
    return
  end
  local argv = { cmd[1], "model", "fetch" }
  if test then
    argv[#argv + 1] = "--test"
  end
  vim.notify("pie-ls: " .. table.concat(argv, " "))
  vim.system(argv, { text = true }, function(res)
    vim.schedule(function()
      local out = vim.trim((res.stdout or "") .. "\n" .. (res.stderr or ""))
      vim.notify(("pie-ls: model fetch %s\n%s"):format(res.code == 0 and "done" or ("failed (" .. res.code .. ")"),
        out), res.code == 0 and vim.log.levels.INFO or vim.log.levels.ERROR)
    end)
  end)
end

---@param opts pie_ls.Options?
function M.setup(opts)
  M.options = vim.tbl_deep_extend("force", vim.deepcopy(M.defaults), opts or {})
  if opts and opts.filetypes then
    M.options.filetypes = opts.filetypes -- lists replace, not merge
  end
  local settings = M.settings()
  -- The server sends only what a client declares: pie/status (the figures after each completion) and, where
  -- the plugin draws ghost text itself (0.11), textDocument/inlineCompletion.
  local capabilities = vim.tbl_deep_extend("force", vim.lsp.protocol.make_client_capabilities(), {
    experimental = { pieStatusNotification = true },
  })
  if M.options.inline_completion.enabled and not capabilities.textDocument.inlineCompletion then
    capabilities.textDocument.inlineCompletion = { dynamicRegistration = false }
  end
  vim.lsp.config(M.name, {
    capabilities = capabilities,
    cmd = M.cmd() or { "pie-ls" },
    filetypes = M.options.filetypes,
    root_markers = M.options.root_markers,
    init_options = settings,
    settings = { ["pie-ls"] = settings },
    handlers = { ["pie/status"] = on_status },
    on_attach = on_attach,
  })
  vim.lsp.enable(M.name)

  local group = vim.api.nvim_create_augroup("pie-ls", { clear = true })
  vim.api.nvim_create_autocmd("LspProgress", { group = group, callback = on_progress })

  vim.api.nvim_create_user_command("PieStatus", function()
    vim.api.nvim_echo(vim.tbl_map(function(l) return { l .. "\n" } end, M.status_lines()), true, {})
  end, { desc = "pie-ls: server, document and KV-cache state" })
  vim.api.nvim_create_user_command("PieFetchModel", function(c)
    M.fetch_model(c.args == "--test" or c.args == "test")
  end, { nargs = "?", complete = function() return { "--test" } end, desc = "pie-ls: fetch the default model" })
  vim.api.nvim_create_user_command("PieCancel", M.cancel, { desc = "pie-ls: cancel the server's running tasks" })
end

return M
