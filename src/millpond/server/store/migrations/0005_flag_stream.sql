-- The flags live stream (server/flags/stream.py) is a realtime subscription to these
-- control-database tables: their updates and deletes must carry the whole old row, so a
-- row that stops matching a subscription is reported as deleted (as for user databases,
-- where the realtime hub sets this itself on first subscribe).
ALTER TABLE flag_rulesets REPLICA IDENTITY FULL;
ALTER TABLE flag_companies REPLICA IDENTITY FULL;
ALTER TABLE flag_company_keys REPLICA IDENTITY FULL;
ALTER TABLE flag_company_overrides REPLICA IDENTITY FULL;
ALTER TABLE flag_users REPLICA IDENTITY FULL;
ALTER TABLE flag_user_keys REPLICA IDENTITY FULL;
ALTER TABLE flag_memberships REPLICA IDENTITY FULL;
ALTER TABLE flag_metrics REPLICA IDENTITY FULL;
