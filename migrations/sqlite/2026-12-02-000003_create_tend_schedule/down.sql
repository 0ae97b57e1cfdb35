DROP TABLE tend_schedule;
