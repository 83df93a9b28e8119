-- End-to-end tests of the Neovim plugin: a real Neovim (started here with --embed --headless) with the plugin
-- from editors/neovim, the real pie-ls binary and the real test model. This script drives it over msgpack-RPC
-- like a user at the keyboard: keys go in through nvim_input, so insert mode, autocommands, completion and the
-- code-action UI run as they do interactively; state is read back with nvim_exec_lua.
--
--   nvim -l editors/tests/neovim/e2e.lua      (env: PIE_LS_BIN, PIE_LS_TEST_MODEL, optional PIE_LS_E2E_ONLY=name)
--
-- Prints one line per case, then `N passed, N failed`; exits 1 when a case failed.
local here = vim.fn.fnamemodify(debug.getinfo(1, "S").source:sub(2), ":p:h")
local repo = vim.fn.fnamemodify(here, ":h:h:h")
local nvim = vim.v.progpath
local bin = vim.env.PIE_LS_BIN
local model = vim.env.PIE_LS_TEST_MODEL
local only = vim.env.PIE_LS_E2E_ONLY
assert(bin and vim.fn.executable(bin) == 1, "PIE_LS_BIN must name the pie-ls binary")
assert(model and vim.fn.filereadable(model) == 1, "PIE_LS_TEST_MODEL must name the test model (GGUF)")

-- not vim.fn.tempname(): Neovim deletes its temporary folder on exit, and the logs must outlive a failure
local run = assert(vim.uv.fs_mkdtemp((vim.env.TMPDIR or "/tmp") .. "/pie-ls-nvim-e2e-XXXXXX"))
local ws = run .. "/ws"
vim.fn.mkdir(ws, "p")
vim.fn.mkdir(run .. "/xdg/cache", "p")
-- Neovim's own folders are the run's; pie-ls's cache (models) stays shared, or :PieFetchModel would download
vim.uv.fs_symlink((vim.env.XDG_CACHE_HOME or (vim.env.HOME .. "/.cache")) .. "/pie-ls", run .. "/xdg/cache/pie-ls")
vim.fn.writefile({}, ws .. "/.git") -- a root marker
local sample = {
  "def total_price(items, tax_rate):",
  "    subtotal = 0",
  "    for item in items:",
  "        subtotal += item.price * item.quantity",
  "    tax = subtotal * tax_rate",
  "    return subtotal + tax",
  "",
}
vim.fn.writefile(sample, ws .. "/shop.py")

local env = {
  PIE_LS_REPO = repo, PIE_LS_BIN = bin, PIE_LS_TEST_MODEL = model,
  PIE_LS_SERVER_LOG = run .. "/server.log",
  XDG_CONFIG_HOME = run .. "/xdg/config", XDG_DATA_HOME = run .. "/xdg/data",
  XDG_STATE_HOME = run .. "/xdg/state", XDG_CACHE_HOME = run .. "/xdg/cache",
}
local chan = vim.fn.jobstart({ nvim, "--embed", "--headless", "-n", "-i", "NONE", "-u", here .. "/init.lua" },
  { rpc = true, cwd = ws, env = env })
assert(chan > 0, "could not start nvim")

local function rpc(method, ...)
  return vim.rpcrequest(chan, method, ...)
end
--- Runs Lua in the Neovim under test.
local function lua(code, ...)
  return rpc("nvim_exec_lua", code, { ... })
end
--- Keys as typed by a user (<Esc>, <C-Space>, ...).
local function keys(k)
  rpc("nvim_input", k)
end
--- Polls `fn` (run here) until it returns a truthy value or `ms` pass; errors with `what` on timeout.
local function wait_for(what, ms, fn)
  local value
  local ok = vim.wait(ms, function()
    local ok, v = pcall(fn)
    value = ok and v ~= vim.NIL and v or nil
    return value ~= nil and value ~= false
  end, 100)
  if not ok then
    error("timed out after " .. ms .. " ms waiting for " .. what, 0)
  end
  return value
end
local function buffer_text()
  return table.concat(lua("return vim.api.nvim_buf_get_lines(0, 0, -1, false)"), "\n") .. "\n"
end
--- A pie/* request for the current buffer, through the plugin.
local function pie(method)
  return lua([[local r, err = require("pie-ls").request(...) return { r = r, err = err }]], method, 0, 5000)
end
local function capability(name)
  return lua([[local c = require("pie-ls").client(0) return c and c.server_capabilities[...] ~= nil]], name)
end
--- Waits until the server has every edit (pie/documentState equals the buffer), returns the state.
local function synced()
  return wait_for("the server's document to equal the buffer", 10000, function()
    local res = pie("pie/documentState")
    return res.r and res.r.text == buffer_text() and res.r
  end)
end

local passed, failed = 0, 0
local function say(line)
  io.stdout:write(line, "\n")
  io.stdout:flush()
end
local function case(name, needs, fn)
  if only and not name:find(only, 1, true) then
    return
  end
  if needs and not capability(needs) then
    failed = failed + 1
    say(("FAIL %s: the server does not offer %s"):format(name, needs))
    return
  end
  keys("<C-\\><C-n>") -- start in normal mode, whatever the last case left
  local t = vim.uv.hrtime()
  local ok, err = xpcall(fn, debug.traceback)
  local ms = math.floor((vim.uv.hrtime() - t) / 1e6)
  if ok then
    passed = passed + 1
    say(("ok   %s (%d ms)"):format(name, ms))
  else
    failed = failed + 1
    say(("FAIL %s (%d ms): %s"):format(name, ms, err))
  end
  io.stdout:flush()
end

case("attach: opening a Python file starts pie-ls and attaches it", nil, function()
  rpc("nvim_command", "edit shop.py")
  local info = wait_for("pie-ls to attach", 20000, function()
    return lua([[local c = require("pie-ls").client(0)
      return c and c.server_capabilities and { id = c.id, name = c.server_info and c.server_info.name }]])
  end)
  assert(info.name == "pie-ls", "server_info.name = " .. tostring(info.name))
end)

case("typing in insert mode keeps pie/documentState equal to the buffer", nil, function()
  -- a new function after the sample, typed key by key (incremental didChange for each)
  keys("Go<CR>def average(values):<CR>if not values:<CR>return 0.0<CR>return sum(values) / len(values)<Esc>")
  local state = synced()
  assert(state.text:find(vim.pesc("def average(values):\n    if not values:\n        return 0.0\n") .. " *return sum"),
    "unexpected text:\n" .. state.text)
  assert(state.syntaxLanguage == "python" and state.syntaxErrors == 0,
    ("syntax %s, %s errors"):format(tostring(state.syntaxLanguage), tostring(state.syntaxErrors)))
  -- an edit in the middle of a line, then undo: the server follows both
  keys("gg0wcwcart_total<Esc>")
  assert(synced().text:find("def cart_total(items", 1, true))
  keys("u")
  assert(synced().text:find("def total_price(items", 1, true))
end)

case("the model warms the file: pie/cacheStats reports a KV cache", nil, function()
  local stats = wait_for("a warm KV cache (the model loads first)", 60000, function()
    local res = pie("pie/cacheStats")
    return res.r and res.r.cachedTokens > 0 and res.r
  end)
  assert(stats.updates >= 0)
end)

case(":PieStatus shows the document and the KV cache", nil, function()
  local out = rpc("nvim_exec2", "PieStatus", { output = true }).output
  assert(out:find("document: version", 1, true), out)
  assert(out:find("KV cache: %d+ tokens"), out)
end)

case(":checkhealth pie-ls finds the binary and reports no error", nil, function()
  rpc("nvim_command", "checkhealth pie-ls")
  local text = table.concat(lua("return vim.api.nvim_buf_get_lines(0, 0, -1, false)"), "\n")
  rpc("nvim_command", "bwipeout")
  assert(text:find("OK .*pie%-ls"), text)
  assert(text:find("OK client %d+"), text)
  assert(not text:find("ERROR"), text)
end)

case(":PieFetchModel --test runs pie-ls model fetch and reports it", nil, function()
  rpc("nvim_command", "messages clear")
  rpc("nvim_command", "PieFetchModel --test")
  local out = wait_for("the fetch to finish", 60000, function()
    local m = rpc("nvim_exec2", "messages", { output = true }).output
    return m:find("model fetch done", 1, true) and m
  end)
  assert(out:find("SmolLM2", 1, true), out)
end)

case("completion: <C-Space> in insert mode shows the server's items, <C-y> inserts one", "completionProvider",
  function()
    rpc("nvim_command", "edit! shop.py")
    synced()
    keys("Go<CR>def discount(price):<CR>return price<C-Space>")
    local items = wait_for("the completion menu", 60000, function()
      local info = lua("return vim.fn.complete_info({ 'pum_visible', 'items' })")
      return info.pum_visible == 1 and #info.items > 0 and info.items
    end)
    local before = lua("return vim.api.nvim_get_current_line()")
    keys("<C-n><C-y><Esc>")
    local after = wait_for("the accepted item in the buffer", 5000, function()
      local line = lua("return vim.api.nvim_get_current_line()")
      return line ~= before and line
    end)
    assert(#after > #before, ("'%s' -> '%s' (first item '%s')"):format(before, after, vim.inspect(items[1])))
    synced()
  end)

case("ghost text: typing shows the model's inline completion, <Tab> accepts it", "inlineCompletionProvider",
  function()
    rpc("nvim_command", "edit! shop.py")
    synced()
    keys("Go<CR>def shipping_cost(weight):<CR>")
    local ns = lua([[return vim.lsp.inline_completion and vim.api.nvim_get_namespaces()["nvim.lsp.inline_completion"]
      or require("pie-ls.ghost").ns]])
    local ghost = wait_for("ghost text (an extmark with virtual text)", 60000, function()
      local marks = lua("return vim.api.nvim_buf_get_extmarks(0, ..., 0, -1, { details = true })", ns)
      for _, m in ipairs(marks) do
        local d = m[4]
        if (d.virt_text and #d.virt_text > 0 and d.virt_text[1][1] ~= "") or d.virt_lines then
          return d
        end
      end
    end)
    local lines_before = lua("return vim.api.nvim_buf_line_count(0)")
    local line_before = lua("return vim.api.nvim_get_current_line()")
    keys("<Tab>")
    wait_for("the accepted ghost text in the buffer", 5000, function()
      return lua("return vim.api.nvim_buf_line_count(0)") ~= lines_before
        or lua("return vim.api.nvim_get_current_line()") ~= line_before
    end)
    keys("<Esc>")
    assert(ghost)
    synced()
  end)

case("ghost text on Neovim 0.11 (the plugin's extmarks): shown after typing, <Tab> accepts it",
  "inlineCompletionProvider", function()
    rpc("nvim_command", "edit! shop.py")
    synced()
    -- what on_attach does where vim.lsp.inline_completion is missing
    lua([[local pie = require("pie-ls")
      pie.options.inline_completion.native = false
      vim.lsp.inline_completion.enable(false, { bufnr = 0 })
      require("pie-ls.ghost").attach(pie.client(0), vim.api.nvim_get_current_buf(), 150)]])
    keys("Go<CR>def handling_fee(order):<CR>")
    local ns = lua([[return require("pie-ls.ghost").ns]])
    wait_for("ghost text from the plugin's extmarks", 60000, function()
      local marks = lua("return vim.api.nvim_buf_get_extmarks(0, ..., 0, -1, { details = true })", ns)
      local d = marks[1] and marks[1][4]
      return d and ((d.virt_text and d.virt_text[1][1] ~= "") or d.virt_lines) and d
    end)
    local item = lua([[return require("pie-ls.ghost").current(0)]])
    local lines_before = lua("return vim.api.nvim_buf_line_count(0)")
    keys("<Tab>")
    local text = wait_for("the accepted ghost text in the buffer", 5000, function()
      local t = buffer_text()
      return lua("return vim.api.nvim_buf_line_count(0)") ~= lines_before or t:find("def handling_fee%(order%):\n *%S")
    end)
    keys("<Esc>")
    local first = vim.trim(vim.split(vim.trim(item.insertText), "\n")[1])
    assert(buffer_text():find(first, 1, true), "the buffer does not hold the item's text " .. vim.inspect(item.insertText))
    lua([[require("pie-ls").options.inline_completion.native = nil]])
    synced()
  end)

case("extract method: the code action from vim.lsp.buf.code_action() rewrites the buffer",
  "codeActionProvider", function()
    rpc("nvim_command", "edit! shop.py")
    synced()
    -- select the loop that computes the subtotal (lines 2-4) and ask for the refactoring
    keys("2GVjj")
    wait_for("visual mode", 2000, function() return lua("return vim.api.nvim_get_mode().mode") == "V" end)
    lua([[vim.lsp.buf.code_action({
      filter = function(a) return a.kind and vim.startswith(a.kind, "refactor.extract.function") end,
      apply = true })]])
    local text = wait_for("the extracted function in the buffer", 60000, function()
      local t = buffer_text()
      return t ~= table.concat(sample, "\n") .. "\n" and t
    end)
    -- the selected statements left total_price, which now calls a new function holding them
    if vim.env.PIE_LS_E2E_VERBOSE then say(text) end
    local defs = select(2, text:gsub("\ndef ", "\n")) + (text:match("^def ") and 1 or 0)
    assert(defs == 2, "expected two functions:\n" .. text)
    assert(text:find("item.price * item.quantity", 1, true), text)
    local body = text:match("def total_price%(items, tax_rate%):\n(.-)\n%S") or text:match("def total_price.*")
    assert(not body:find("for item in items", 1, true), "the loop is still in total_price:\n" .. text)
    local name = body:match("subtotal = ([%w_]+)%(items%)")
    assert(name, "total_price does not call the new function:\n" .. text)
    assert(text:find("\ndef " .. name .. "%(items%):\n"), "no def " .. name .. "(items):\n" .. text)
    synced()
  end)

-- shut the server down the LSP way (shutdown, exit), then quit
pcall(lua, [[for _, c in ipairs(vim.lsp.get_clients()) do c:stop() end
  vim.wait(5000, function() return #vim.lsp.get_clients() == 0 end, 50)]])
pcall(vim.rpcnotify, chan, "nvim_command", "qall!")
vim.fn.jobwait({ chan }, 5000)
pcall(vim.fn.jobstop, chan)
-- a server that outlived its client (it should not) is ours to stop: its command line names our log file
for _, pid in ipairs(vim.fn.readdir("/proc", function(n) return n:match("^%d+$") and 1 or 0 end)) do
  local f = io.open("/proc/" .. pid .. "/cmdline")
  local cmdline = f and f:read("*a") or ""
  if f then f:close() end
  if cmdline:find(env.PIE_LS_SERVER_LOG, 1, true) then
    say("pie-ls (pid " .. pid .. ") outlived Neovim: stopping it")
    vim.uv.kill(tonumber(pid), "sigterm")
  end
end
say(("%d passed, %d failed"):format(passed, failed))
if failed > 0 then
  say("server log and workspace kept in " .. run)
else
  vim.fn.delete(run, "rf")
end
os.exit(failed > 0 and 1 or 0)
