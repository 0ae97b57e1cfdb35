DROP TABLE consistency_task;
