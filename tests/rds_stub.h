/* rds_stub.h: the knob of tests/rds_stub.c. */
#define RDS_STUB_DOWN	0
#define RDS_STUB_ERROR	1
#define RDS_STUB_LOST	2
extern int rds_stub_mode;
