DROP TABLE approvals;
DROP TABLE carrier_certificates;
DROP TABLE loss_codes;
DROP TABLE carriers;
DROP TABLE proofings;
DROP TABLE people;
DROP TABLE officer_tokens;
DROP TABLE officers;
