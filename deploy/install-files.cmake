# deploy/install-files.cmake - run by "cmake --install" (see
# deploy/CMakeLists.txt): writes the deploy files whose contents name
# install paths, for the prefix really installed to, and installs them.
#
# In (set by the install(CODE) that includes this file): H2_DEPLOY_SRC,
# H2_DEPLOY_BIN (deploy/'s source and build directories), H2_BINDIR,
# H2_SYSCONFDIR, H2_MANDIR, H2_UNITDIR (as configured; relative ones are
# taken under CMAKE_INSTALL_PREFIX, which here is the install-time prefix)
# and H2_VERSION.  file(INSTALL) adds $ENV{DESTDIR} and records each file
# in install_manifest.txt.
#
# The configuration file is installed only where none exists, so an
# upgrade never overwrites the operator's; h2d.conf.example beside it is
# always the current example.

# out = dir under the install prefix, or dir itself if absolute.
function(h2_under_prefix out dir)
  if(IS_ABSOLUTE "${dir}")
    set(${out} "${dir}" PARENT_SCOPE)
  else()
    set(${out} "${CMAKE_INSTALL_PREFIX}/${dir}" PARENT_SCOPE)
  endif()
endfunction()

# The configuration directory as GNUInstallDirs would name it for this
# prefix: /etc for the prefixes / and /usr, /etc/opt/X for /opt/X, else
# PREFIX/etc.
if(IS_ABSOLUTE "${H2_SYSCONFDIR}")
  set(sysconfdir "${H2_SYSCONFDIR}")
elseif(CMAKE_INSTALL_PREFIX MATCHES "^/(usr/?)?$")
  set(sysconfdir "/etc")
elseif(CMAKE_INSTALL_PREFIX MATCHES "^/opt/(.+)$")
  set(sysconfdir "/etc/opt/${CMAKE_MATCH_1}")
else()
  set(sysconfdir "${CMAKE_INSTALL_PREFIX}/${H2_SYSCONFDIR}")
endif()
string(REGEX REPLACE "/+$" "" sysconfdir "${sysconfdir}")

set(H2_CONFDIR "${sysconfdir}/h2")
h2_under_prefix(H2_BINDIR "${H2_BINDIR}")
h2_under_prefix(mandir "${H2_MANDIR}")
h2_under_prefix(unitdir "${H2_UNITDIR}")

# ConfigurationDirectory= is always under /etc: name it only when the
# configuration really is there, or it would create an empty /etc/h2.
if(H2_CONFDIR STREQUAL "/etc/h2")
  set(H2_CONFIGURATION_DIRECTORY "ConfigurationDirectory=h2")
else()
  set(H2_CONFIGURATION_DIRECTORY
    "# (no ConfigurationDirectory=: the configuration is in ${H2_CONFDIR})")
endif()

set(gen "${H2_DEPLOY_BIN}/generated")
file(MAKE_DIRECTORY "${gen}")
configure_file("${H2_DEPLOY_SRC}/h2d.service.in" "${gen}/h2d.service" @ONLY)
configure_file("${H2_DEPLOY_SRC}/h2d.conf.in" "${gen}/h2d.conf.example" @ONLY)
foreach(page h2d.8 h2ctl.1 h2d.conf.5)
  configure_file("${H2_DEPLOY_SRC}/man/${page}.in" "${gen}/${page}" @ONLY)
endforeach()

file(INSTALL DESTINATION "${unitdir}" TYPE FILE
  PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ
  FILES "${gen}/h2d.service")
file(INSTALL DESTINATION "${mandir}/man8" TYPE FILE FILES "${gen}/h2d.8")
file(INSTALL DESTINATION "${mandir}/man1" TYPE FILE FILES "${gen}/h2ctl.1")
file(INSTALL DESTINATION "${mandir}/man5" TYPE FILE FILES "${gen}/h2d.conf.5")

file(INSTALL DESTINATION "${H2_CONFDIR}" TYPE FILE
  PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ
  FILES "${gen}/h2d.conf.example")
if(EXISTS "$ENV{DESTDIR}${H2_CONFDIR}/h2d.conf")
  message(STATUS "Keeping: $ENV{DESTDIR}${H2_CONFDIR}/h2d.conf "
    "(compare it with h2d.conf.example beside it)")
else()
  file(INSTALL DESTINATION "${H2_CONFDIR}" TYPE FILE
    PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ
    FILES "${gen}/h2d.conf.example" RENAME h2d.conf)
endif()
