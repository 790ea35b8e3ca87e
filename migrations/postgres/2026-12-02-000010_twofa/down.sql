DROP TABLE twofa_recovery_codes;
DROP TABLE twofa_factors;
