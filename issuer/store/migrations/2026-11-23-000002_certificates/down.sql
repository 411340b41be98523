DROP TABLE crls;
DROP TABLE certificates;
