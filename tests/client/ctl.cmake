# h2ctl's command line, run as a user would: help, usage errors, settings
# from flags and environment, a refused connection.  Needs no server.
# Included from tests/client/CMakeLists.txt.
find_package(OpenSSL 3 REQUIRED) # test TLS files are generated with libcrypto

h2_test(test_h2ctl_cli ${CMAKE_CURRENT_LIST_DIR}/test_h2ctl_cli.c)
target_link_libraries(test_h2ctl_cli PRIVATE OpenSSL::Crypto h2_warnings)
target_compile_definitions(test_h2ctl_cli PRIVATE
  H2CTL_PATH="$<TARGET_FILE:h2ctl>")
add_dependencies(test_h2ctl_cli h2ctl)
