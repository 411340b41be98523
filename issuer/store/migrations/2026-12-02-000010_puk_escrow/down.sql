DROP TABLE puk_releases;
DROP TABLE carrier_puks;
