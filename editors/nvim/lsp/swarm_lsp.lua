-- Default configuration for swarm-lsp, found by `vim.lsp.enable('swarm_lsp')` (Neovim 0.11+).
-- Change it with `vim.lsp.config('swarm_lsp', { ... })` or `require('swarm_lsp').setup({ ... })`.
---@type vim.lsp.Config
return {
  cmd = { 'swarm-lsp', 'serve' },
  filetypes = {
    'python', 'javascript', 'typescript', 'javascriptreact', 'typescriptreact', 'go', 'rust', 'java',
    'c', 'cpp', 'markdown',
  },
  root_markers = { '.swarm-lsp.toml', 'pyproject.toml', 'package.json', 'go.mod', 'Cargo.toml', '.git' },
  -- Settings for the workspace, on top of .swarm-lsp.toml and SWARM_LSP_* (see docs/configuration.md),
  -- e.g. { swarm = { voters = 3 }, model = { name = 'bundled' } }.
  settings = { ['swarm-lsp'] = vim.empty_dict() },
}
