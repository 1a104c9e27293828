-- Several Postgres clusters (server/clusters/). 'default' is the home cluster, the one the
-- server starts on (it holds this control database): no URL. Another cluster's row keeps
-- the URL of its admin role sealed (AES-GCM under a key derived from the server secret,
-- registry.py), never in the clear. A draining cluster gets no new databases.
ALTER TABLE clusters
    ADD COLUMN url_sealed bytea,
    ADD COLUMN state text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'draining'));

-- A database being moved to another cluster (server/clusters/move.py) is 'moving': every
-- path refuses it with 503 database_moving until it is 'ready' on its new cluster.
ALTER TABLE databases DROP CONSTRAINT databases_state_check;
ALTER TABLE databases ADD CONSTRAINT databases_state_check
    CHECK (state IN ('creating', 'ready', 'deleting', 'moving'));
ALTER TABLE databases ADD COLUMN moving_to text REFERENCES clusters (id);
CREATE INDEX databases_cluster_id ON databases (cluster_id);

-- Replicas load a cluster they do not know when a database names it; a removed or
-- drained one is announced like any change of who may do what.
CREATE TRIGGER clusters_auth_change AFTER INSERT OR UPDATE OR DELETE ON clusters
    FOR EACH STATEMENT EXECUTE FUNCTION millpond_notify_auth();
