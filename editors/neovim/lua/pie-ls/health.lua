-- :checkhealth pie-ls
local M = {}

function M.check()
  local health = vim.health
  local pie = require("pie-ls")

  health.start("Neovim")
  if vim.fn.has("nvim-0.11") == 1 then
    health.ok("Neovim " .. tostring(vim.version()) .. " (vim.lsp.config/vim.lsp.enable)")
  else
    health.error("Neovim 0.11+ is required (vim.lsp.config/vim.lsp.enable)")
  end
  if vim.lsp.inline_completion then
    health.ok("ghost text through vim.lsp.inline_completion")
  else
    health.info("no vim.lsp.inline_completion (Neovim < 0.12): ghost text through the plugin's extmarks")
  end

  health.start("pie-ls server")
  local cmd = pie.cmd()
  if not cmd then
    health.error("pie-ls not found", {
      "put pie-ls on PATH, or pass cmd = { '/path/to/pie-ls' } to require('pie-ls').setup()",
      "build it: cargo build --release -p pie-ls (see the pie-ls README)",
    })
    return
  end
  local version = vim.system({ cmd[1], "--version" }, { text = true }):wait(5000)
  if version.code == 0 then
    health.ok(("%s: %s"):format(cmd[1], vim.trim(version.stdout or "")))
  else
    health.error(("%s --version failed (exit %s): %s"):format(cmd[1], tostring(version.code),
      vim.trim(version.stderr or "")))
    return
  end

  health.start("model")
  local settings = pie.settings()
  local model = settings.model or {}
  local backend = settings.backend or {}
  if model.enabled == false then
    health.info("model.enabled = false: documents are tracked, nothing needs the model")
  elseif backend.kind and backend.kind ~= "local" then
    health.info(("backend.kind = %s at %s: the model runs on that server, none is loaded locally"):format(
      backend.kind, backend.url or "its default local port"))
  else
    local argv = { cmd[1], "model", "path" }
    local configured = model.path
    if configured and not configured:match("^hf:") then
      local path = vim.fn.expand(configured)
      if vim.fn.filereadable(path) == 1 then
        health.ok("model.path: " .. path)
      else
        health.error("model.path is not a readable file: " .. path)
      end
    else
      local res = vim.system(argv, { text = true }):wait(5000)
      local path = vim.trim(res.stdout or "")
      if configured then
        health.info("model.path: " .. configured .. " (downloaded into the cache on first use)")
      elseif res.code == 0 and vim.fn.filereadable(path) == 1 then
        health.ok("default model: " .. path)
      else
        health.warn("the default model is not downloaded" .. (path ~= "" and (": " .. path) or ""),
          { ":PieFetchModel (or `pie-ls model fetch`)" })
      end
    end
  end

  health.start("clients")
  local clients = vim.lsp.get_clients({ name = pie.name })
  if #clients == 0 then
    health.info("no pie-ls client running (open a file of a configured filetype: "
      .. table.concat(pie.options.filetypes, ", ") .. ")")
  end
  for _, client in ipairs(clients) do
    local features = {}
    for _, m in ipairs({ "textDocument/completion", "textDocument/inlineCompletion", "textDocument/codeAction" }) do
      if client:supports_method(m) then
        features[#features + 1] = (m:gsub("textDocument/", ""))
      end
    end
    health.ok(("client %d (%s), %d buffer(s), offers: %s"):format(client.id,
      client.server_info and client.server_info.version or "?", vim.tbl_count(client.attached_buffers),
      #features > 0 and table.concat(features, ", ") or "document tracking only"))
  end
end

return M
