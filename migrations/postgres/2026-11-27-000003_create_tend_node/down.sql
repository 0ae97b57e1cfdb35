DROP TABLE tend_node;
