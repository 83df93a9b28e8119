-- Ghost text for Neovim 0.11, which has no vim.lsp.inline_completion: asks the server for
-- `textDocument/inlineCompletion` after typing pauses and shows the first item as extmarks (inline virtual text
-- at the cursor, virtual lines below for the rest). 0.12+ uses vim.lsp.inline_completion instead (init.lua).
local M = {}

local api = vim.api
M.ns = api.nvim_create_namespace("pie-ls.ghost")

---@type table<integer, { client_id: integer, timer: uv.uv_timer_t?, item: table?, row: integer, col: integer,
---  request_id: integer? }>
local buffers = {}

local function clear(bufnr)
  local b = buffers[bufnr]
  if not b then
    return
  end
  api.nvim_buf_clear_namespace(bufnr, M.ns, 0, -1)
  b.item = nil
  if b.request_id then
    local client = vim.lsp.get_client_by_id(b.client_id)
    if client then
      client:cancel_request(b.request_id)
    end
    b.request_id = nil
  end
end

local function item_text(item)
  local text = item.insertText
  if type(text) == "table" then
    text = text.value
  end
  return text or ""
end

local function show(bufnr, item, row, col)
  local b = buffers[bufnr]
  local text = item_text(item)
  local line = api.nvim_buf_get_lines(bufnr, row, row + 1, false)[1] or ""
  if item.range then
    -- the item replaces range.start..cursor: show only what the user has not typed yet
    local start = item.range.start.character
    local typed = line:sub(start + 1, col)
    if text:sub(1, #typed) ~= typed then
      return
    end
    text = text:sub(#typed + 1)
  end
  if text == "" then
    return
  end
  local lines = vim.split(text, "\n", { plain = true })
  local virt_lines = {}
  for i = 2, #lines do
    virt_lines[#virt_lines + 1] = { { lines[i], "ComplHint" } }
  end
  api.nvim_buf_set_extmark(bufnr, M.ns, row, col, {
    virt_text = lines[1] ~= "" and { { lines[1], "ComplHint" } } or nil,
    virt_text_pos = "inline",
    virt_lines = #virt_lines > 0 and virt_lines or nil,
    hl_mode = "combine",
  })
  b.item, b.row, b.col = item, row, col
end

local function request(bufnr)
  local b = buffers[bufnr]
  local client = b and vim.lsp.get_client_by_id(b.client_id)
  if not client or api.nvim_get_current_buf() ~= bufnr or not api.nvim_get_mode().mode:match("^i") then
    return
  end
  clear(bufnr)
  local cursor = api.nvim_win_get_cursor(0)
  local params = {
    textDocument = vim.lsp.util.make_text_document_params(bufnr),
    position = vim.lsp.util.make_position_params(0, client.offset_encoding).position,
    context = { triggerKind = 2 },
  }
  local tick = api.nvim_buf_get_changedtick(bufnr)
  local _, id = client:request("textDocument/inlineCompletion", params, function(err, result)
    b.request_id = nil
    if err or not result or api.nvim_buf_get_changedtick(bufnr) ~= tick then
      return
    end
    local items = vim.islist(result) and result or result.items or {}
    local now = api.nvim_win_get_cursor(0)
    if items[1] and now[1] == cursor[1] and now[2] == cursor[2] then
      show(bufnr, items[1], cursor[1] - 1, cursor[2])
    end
  end, bufnr)
  b.request_id = id
end

function M.attach(client, bufnr, debounce_ms)
  if buffers[bufnr] then
    return
  end
  buffers[bufnr] = { client_id = client.id, row = 0, col = 0 }
  local group = api.nvim_create_augroup("pie-ls.ghost." .. bufnr, { clear = true })
  api.nvim_create_autocmd({ "TextChangedI", "CursorMovedI" }, {
    group = group,
    buffer = bufnr,
    callback = function()
      local b = buffers[bufnr]
      clear(bufnr)
      if b.timer then
        b.timer:stop()
        b.timer:close()
      end
      b.timer = vim.defer_fn(function()
        b.timer = nil
        request(bufnr)
      end, debounce_ms or 150)
    end,
  })
  api.nvim_create_autocmd({ "InsertLeave", "BufLeave" }, { group = group, buffer = bufnr, callback = function()
    clear(bufnr)
  end })
  api.nvim_create_autocmd("LspDetach", { group = group, buffer = bufnr, callback = function(ev)
    if ev.data.client_id == client.id then
      clear(bufnr)
      buffers[bufnr] = nil
      api.nvim_del_augroup_by_id(group)
    end
  end })
end

--- The ghost text shown in a buffer (nil: none).
function M.current(bufnr)
  local b = buffers[(bufnr == nil or bufnr == 0) and api.nvim_get_current_buf() or bufnr]
  return b and b.item
end

--- Inserts the ghost text at the cursor; false when there is none.
function M.accept()
  local bufnr = api.nvim_get_current_buf()
  local b = buffers[bufnr]
  if not b or not b.item then
    return false
  end
  local item, row, col = b.item, b.row, b.col
  vim.schedule(function()
    clear(bufnr)
    local text = item_text(item)
    local lines = vim.split(text, "\n", { plain = true })
    local srow, scol, erow, ecol = row, col, row, col
    if item.range then
      local client = vim.lsp.get_client_by_id(b.client_id)
      local enc = client and client.offset_encoding or "utf-16"
      local line = api.nvim_buf_get_lines(bufnr, item.range.start.line, item.range.start.line + 1, false)[1] or ""
      srow, scol = item.range.start.line, vim.str_byteindex(line, enc, item.range.start.character, false)
      local eline = api.nvim_buf_get_lines(bufnr, item.range["end"].line, item.range["end"].line + 1, false)[1] or ""
      erow, ecol = item.range["end"].line, vim.str_byteindex(eline, enc, item.range["end"].character, false)
    end
    api.nvim_buf_set_text(bufnr, srow, scol, erow, ecol, lines)
    local last = #lines == 1 and scol + #lines[1] or #lines[#lines]
    api.nvim_win_set_cursor(0, { srow + #lines, last })
  end)
  return true
end

return M
