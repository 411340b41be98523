DROP TABLE crl_numbers;
DROP TABLE outbox;
