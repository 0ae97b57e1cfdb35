-- Periodic tasks (WorkerPoolBuilder::periodic): one row per schedule name. A process enqueues a
-- slot's task only in the transaction whose compare-and-set moves last_slot_ms from the value it
-- read to the new slot, so every slot is enqueued once however many processes run the schedule.
-- Slots are epoch milliseconds. New table only: existing rows and tables are untouched.
CREATE TABLE tend_schedule (
    name         VARCHAR(200) PRIMARY KEY,
    spec         VARCHAR(255) NOT NULL,
    last_slot_ms BIGINT       NOT NULL,
    next_slot_ms BIGINT       NOT NULL,
    updated_at   BIGINT       NOT NULL
);
