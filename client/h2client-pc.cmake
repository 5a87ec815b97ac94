# client/h2client-pc.cmake - run by "cmake --install" (see
# client/CMakeLists.txt): writes h2client.pc for CMAKE_INSTALL_PREFIX as it
# is at install time, so "cmake --install --prefix DIR" gets a .pc file
# that points into DIR.
#
# In: H2_PC_IN, H2_PC_OUT (template and output), H2_PC_LIBDIR_REL,
# H2_PC_INCLUDEDIR_REL (GNUInstallDirs' values; relative ones are taken
# under ${prefix}), H2_PC_VERSION.
set(H2_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
foreach(d LIBDIR INCLUDEDIR)
  if(IS_ABSOLUTE "${H2_PC_${d}_REL}")
    set(H2_PC_${d} "${H2_PC_${d}_REL}")
  else()
    set(H2_PC_${d} "\${prefix}/${H2_PC_${d}_REL}")
  endif()
endforeach()
configure_file("${H2_PC_IN}" "${H2_PC_OUT}" @ONLY)
