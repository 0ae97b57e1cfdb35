-- Live worker processes, for optional shard affinity (WorkerPoolBuilder::shard_affinity).
-- node_id (0-1023) is also the process's snowflake node id, so shard keys never collide.
CREATE TABLE tend_node (
    node_id      INTEGER      PRIMARY KEY,
    owner        VARCHAR(255) NOT NULL,
    heartbeat_at BIGINT       NOT NULL,
    started_at   BIGINT       NOT NULL
);
