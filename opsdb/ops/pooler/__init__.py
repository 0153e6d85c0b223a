"""PgBouncer in front of the cluster: `opsdb pgbouncer generate` writes pgbouncer.ini and userlist.txt
sized against the server (generate), `pgbouncer check` reviews an existing configuration (check) and
`pgbouncer status` grades the admin console's figures (status)."""
