-- The Neovim under test: only the pie-ls plugin from this repository, the real server, the test model.
-- Environment (set by e2e.lua): PIE_LS_REPO, PIE_LS_BIN, PIE_LS_TEST_MODEL.
vim.opt.runtimepath:prepend(vim.env.PIE_LS_REPO .. "/editors/neovim")
vim.opt.swapfile = false
vim.opt.shortmess:append("I")
vim.opt.completeopt = { "menuone", "noselect", "popup" }
vim.lsp.log.set_level(vim.env.PIE_LS_NVIM_LSP_LOG or "WARN")
require("pie-ls").setup({
  cmd = { vim.env.PIE_LS_BIN, "--log-file", vim.env.PIE_LS_SERVER_LOG },
  settings = { model = { path = vim.env.PIE_LS_TEST_MODEL, threads = 2, contextLength = 2048 } },
  progress = true,
})
-- what a user would show: line numbers, and the plugin's figures in the statusline
vim.opt.number = true
vim.opt.laststatus = 2
vim.opt.statusline = "%f %m%=%{v:lua.require'pie-ls'.statusline()}  %l:%c "
