/* config_schema.h: the libcyaml schema of ap_config_t and its defaults/validation, shared by
 * launcher/config.c (loading) and the docs test. Internal to the config module. */
#ifndef APPRENTICE_CONFIG_SCHEMA_H
#define APPRENTICE_CONFIG_SCHEMA_H

#include <cyaml/cyaml.h>

#include "apprentice/config.h"

const cyaml_schema_field_t *ap_config_fields(void);  /* top-level mapping fields */
const cyaml_schema_value_t *ap_config_schema(void);  /* the whole config (a pointer) */
void ap_config_defaults(ap_config_t *c);             /* strings are heap copies */

#endif
