"""Tasks for AI agents: a Model Context Protocol server on the same app (`POST /mcp`, docs/agents.md).

`router` is the HTTP side (who may call, from where, how often), `tools` the tools an agent calls: each one reads
as a task route does (a database block, the caller's scope, one service call, one answer).
"""
