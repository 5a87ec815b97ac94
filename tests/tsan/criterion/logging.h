/* logging.h - cr_log_* for the thread-sanitizer build (in criterion.h). */
#ifndef H2_TSAN_LOGGING_H
#define H2_TSAN_LOGGING_H

#include "criterion.h"

#endif
