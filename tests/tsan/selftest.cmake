# selftest.cmake - ctest's check of the thread-sanitizer build's test
# runner (runner.c) with selftest.c: exit status and output of each case.
#
#   cmake -DSELFTEST=path/to/tsan_selftest [-DTSAN=1] -P selftest.cmake
#
# TSAN=1 (the thread-sanitizer build, run with TSAN_OPTIONS exitcode=66 as
# scripts/test does) also checks that a data race fails its test.

if(NOT SELFTEST)
  message(FATAL_ERROR "usage: cmake -DSELFTEST=... -P selftest.cmake")
endif()

# check(NAME WANT-STATUS FILTER REGEX...): run the tests FILTER selects;
# the exit status must be WANT-STATUS and the output (stdout and stderr
# together) match every REGEX.  A regex starting with "!" must not match.
function(check name want filter)
  execute_process(COMMAND ${SELFTEST} --filter ${filter}
    RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT rc STREQUAL want)
    message(FATAL_ERROR "${name}: exit status ${rc}, not ${want}\n${out}")
  endif()
  foreach(re ${ARGN})
    if(re MATCHES "^!(.*)")
      if(out MATCHES "${CMAKE_MATCH_1}")
        message(FATAL_ERROR "${name}: output matches ${CMAKE_MATCH_1}\n${out}")
      endif()
    elseif(NOT out MATCHES "${re}")
      message(FATAL_ERROR "${name}: output does not match ${re}\n${out}")
    endif()
  endforeach()
endfunction()

check(pass 0 "ok/*"
  "suite init\ntest init\nbody\ntest fini\nsuite fini\n"
  "param 10\n.*param 11\n.*param 12\n"
  "Tested: 4 \\| Passing: 4 \\| Failing: 0")
check(fail 1 "fail/*"
  "x == 4: x is 3\n"
  "test fini\nsuite fini\n"
  "!after the assertion"
  "Tested: 1 \\| Passing: 0 \\| Failing: 1")
check(expect 1 "expect/*" "1 == 2\n" "after the expectation"
  "Failing: 1")
check(skip 0 "skip/*" "not here" "!after the skip" "Skipped: 1")
check(timeout 1 "timeout/*" "timeout::is_killed: timed out")
check(thread 1 "thread/*" "from another thread" "!after the join"
  "thread::failure_ends_the_test: exit status 1")
execute_process(COMMAND ${SELFTEST} --filter "ok/*" --exclude "*each*"
  RESULT_VARIABLE rc OUTPUT_VARIABLE out)
if(NOT rc EQUAL 0 OR NOT out MATCHES "Tested: 1 \\|")
  message(FATAL_ERROR "--exclude: exit status ${rc}\n${out}")
endif()

if(TSAN)
  check(race 1 "race/*" "WARNING: ThreadSanitizer: data race"
    "race::is_reported: exit status 66")
endif()
