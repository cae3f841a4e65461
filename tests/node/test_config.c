// The node config: deploy/loco.example.ini documents every key with its default, and every error a
// user can make in a config file or a --set flag is refused with the file, the line, the key and
// the reason (what `loco` prints before exiting 2; tests/integration/test_cli_errors.sh checks
// the exit status).
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "node/config.h"

#define EXAMPLE "deploy/loco.example.ini"
#define DEMO "deploy/demo.ini"

static char s_path[64];

// Writes text to a fresh temp file; its path is s_path.
static const char *s_file(const char *text) {
    snprintf(s_path, sizeof s_path, "/tmp/loco_test_config_XXXXXX");
    int fd = mkstemp(s_path);
    cr_assert(fd >= 0);
    size_t n = strlen(text);
    cr_assert_eq(write(fd, text, n), (ssize_t)n);
    close(fd);
    return s_path;
}

// Loads text over the defaults; returns config_load's result, the message in err.
static int s_load(loco_config_t *c, const char *text, char *err, size_t errlen) {
    config_defaults(c);
    err[0] = '\0';
    int rc = config_load(c, s_file(text), err, errlen);
    unlink(s_path);
    return rc;
}

// The message must name the file and line, contain each fragment, and show the offending line.
static void s_expect_error(const char *text, int line, const char *shown, const char *frag1, const char *frag2) {
    loco_config_t c;
    char err[1024];
    cr_assert_eq(s_load(&c, text, err, sizeof err), -1, "accepted:\n%s", text);
    char where[128];
    snprintf(where, sizeof where, "%s:%d: ", s_path, line);
    cr_expect(strncmp(err, where, strlen(where)) == 0, "expected '%s' at the start of: %s", where, err);
    char show[512];
    snprintf(show, sizeof show, "\n  > %s", shown);
    cr_expect(strstr(err, show) != NULL, "expected the line '%s' shown in: %s", shown, err);
    cr_expect(strstr(err, frag1) != NULL, "expected '%s' in: %s", frag1, err);
    if (frag2) cr_expect(strstr(err, frag2) != NULL, "expected '%s' in: %s", frag2, err);
}

// Copies the fields of a that config_load may legitimately change (all but source) into a
// comparable form.
static int s_same_values(const loco_config_t *a, const loco_config_t *b) {
    loco_config_t x = *a, y = *b;
    memset(x.source, 0, sizeof x.source);
    memset(y.source, 0, sizeof y.source);
    return memcmp(&x, &y, sizeof x) == 0;
}

// ---------------------------------------------------------------------------------------------
// deploy/loco.example.ini and deploy/demo.ini

static char *s_read(const char *path) {
    FILE *f = fopen(path, "r");
    cr_assert(f, "%s not found (tests run from the repository root)", path);
    static char buf[65536];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    return buf;
}

Test(config_example, lists_every_key_under_its_section) {
    char *text = s_read(EXAMPLE);
    // Collect the active "section.key" assignments of the file.
    char seen[256][96];
    int nseen = 0;
    char section[64] = "";
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        while (*line == ' ' || *line == '\t') line++;
        if (*line == '#' || *line == ';' || *line == '\0') continue;
        if (*line == '[') {
            cr_assert(sscanf(line, "[%63[^]]]", section) == 1, "bad header: %s", line);
            continue;
        }
        char key[64];
        cr_assert(sscanf(line, "%63[a-z_0-9] =", key) == 1 && strchr(line, '='), "not an assignment: %s", line);
        cr_assert(nseen < 256);
        snprintf(seen[nseen++], sizeof seen[0], "%s.%s", section, key);
    }
    int n = config_num_keys();
    cr_assert_gt(n, 20);
    for (int i = 0; i < n; i++) {
        char name[96];
        config_key_name(i, name, sizeof name);
        int count = 0;
        for (int j = 0; j < nseen; j++) count += strcmp(seen[j], name) == 0;
        // Repeatable keys (lists) may show several lines; every key shows at least one.
        cr_expect_geq(count, 1, "%s: key %s is missing (every key must be documented there)", EXAMPLE, name);
    }
}

Test(config_example, documents_each_key_with_a_comment) {
    // Every assignment is preceded (directly, or through a run of comment lines) by a comment that
    // states its default.
    char *text = s_read(EXAMPLE);
    int commented = 0, assignments = 0, said_default = 0;
    int in_comment = 0, default_in_comment = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        if (line[0] == '#') {
            if (!in_comment) default_in_comment = 0;
            in_comment = 1;
            if (strstr(line, "Default:")) default_in_comment = 1;
            continue;
        }
        if (line[0] == '[' || line[0] == '\0') continue;
        assignments++;
        commented += in_comment;
        said_default += in_comment && default_in_comment;
        cr_expect(in_comment && default_in_comment, "%s: '%s' has no comment stating its default", EXAMPLE, line);
        in_comment = 0;
    }
    cr_expect_geq(assignments, config_num_keys());
    cr_expect_eq(said_default, assignments);
}

Test(config_example, loads_cleanly_and_states_the_defaults) {
    // Each value in the example is its key's default, so loading it must change nothing. This also
    // proves every default is parseable and in range: a default that failed its own check would be
    // left at zero by config_defaults while the example's text of it would either fail to load or
    // load as a different value.
    loco_config_t def, c;
    config_defaults(&def);
    config_defaults(&c);
    char err[1024] = "";
    cr_assert_eq(config_load(&c, EXAMPLE, err, sizeof err), 0, "%s", err);
    cr_assert_eq(config_validate(&c, err, sizeof err), 0, "%s", err);
    cr_expect(s_same_values(&def, &c), "%s sets a value that differs from the built-in default", EXAMPLE);
    cr_expect_str_eq(c.source, EXAMPLE);
}

Test(config_example, defaults_are_valid) {
    loco_config_t c;
    config_defaults(&c);
    char err[1024] = "";
    cr_expect_eq(config_validate(&c, err, sizeof err), 0, "%s", err);
    cr_expect_str_eq(c.source, "(defaults)");
    // Each default survives a round trip through --set: take the key's text from the example
    // (which equals the default, test above) and apply it; nothing may change.
    char *text = s_read(EXAMPLE);
    char section[64] = "";
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        if (line[0] == '#' || line[0] == '\0') continue;
        if (line[0] == '[') {
            sscanf(line, "[%63[^]]]", section);
            continue;
        }
        char key[64], value[512] = "";
        cr_assert(sscanf(line, "%63[a-z_0-9] = %511[^\n]", key, value) >= 1);
        char assign[700];
        snprintf(assign, sizeof assign, "%s.%s=%s", section, key, value);
        loco_config_t d;
        config_defaults(&d);
        cr_expect_eq(config_set(&d, assign, err, sizeof err), 0, "%s", err);
        cr_expect(s_same_values(&c, &d), "--set %s changed the defaults", assign);
    }
}

Test(config_demo, loads_cleanly_and_keeps_its_files_under_build) {
    loco_config_t c;
    config_defaults(&c);
    char err[1024] = "";
    cr_assert_eq(config_load(&c, DEMO, err, sizeof err), 0, "%s", err);
    cr_assert_eq(config_validate(&c, err, sizeof err), 0, "%s", err);
    // The demo runs from the repository root and must not litter it outside build/.
    cr_expect(strncmp(c.data, "build/", 6) == 0, "data = %s", c.data);
    cr_expect(strncmp(c.checkpoint_dir, "build/", 6) == 0, "checkpoint_dir = %s", c.checkpoint_dir);
    cr_expect(strncmp(c.metrics, "build/", 6) == 0, "metrics = %s", c.metrics);
}

// ---------------------------------------------------------------------------------------------
// Parsing

Test(config_parse, values_comments_whitespace_and_overrides) {
    loco_config_t c;
    char err[1024];
    int rc = s_load(&c,
                    "; a comment\n"
                    "# another\n"
                    "\n"
                    "  [ train ]  \n"
                    "steps=7\n"
                    "\tlr =  0.5   # inline comment\n"
                    "data = dir#with#hashes ; comment\n"
                    "steps = 11\r\n"            // CRLF, and a later value wins
                    "tf32 = off\n"
                    "device = cpu\n"
                    "[model]\n"
                    "layers = 2\n"
                    "[run]\n"
                    "name = my run\n"
                    "[train]\n"
                    "metrics =\n"
                    "seed = 0",                 // no newline at the end
                    err, sizeof err);
    cr_assert_eq(rc, 0, "%s", err);
    cr_expect_eq(c.steps, 11);
    cr_expect_float_eq(c.lr, 0.5f, 0);
    cr_expect_str_eq(c.data, "dir#with#hashes");
    cr_expect_eq(c.tf32, 0);
    cr_expect_eq(c.model.layers, 2);
    cr_expect_str_eq(c.run_name, "my run");
    cr_expect_str_eq(c.metrics, "");
    cr_expect_eq(c.seed, 0);
    // Keys the file does not mention keep their defaults.
    loco_config_t def;
    config_defaults(&def);
    cr_expect_eq(c.batch, def.batch);
    cr_expect_eq(c.model.d_model, def.model.d_model);
}

Test(config_parse, empty_file_is_the_defaults) {
    loco_config_t c, def;
    char err[1024];
    cr_assert_eq(s_load(&c, "", err, sizeof err), 0, "%s", err);
    config_defaults(&def);
    cr_expect(s_same_values(&c, &def));
}

Test(config_parse, integer_limits) {
    loco_config_t c;
    char err[1024];
    cr_assert_eq(s_load(&c, "[train]\nseed = 9000000000000000000\ndata_stream = -1\nbatch = 1\n", err, sizeof err), 0, "%s", err);
    cr_expect_eq(c.seed, 9000000000000000000LL);
    cr_expect_eq(c.data_stream, -1);
    cr_expect_eq(c.batch, 1);
}

// ---------------------------------------------------------------------------------------------
// Errors in files: file, line, key, reason, and the line itself

Test(config_errors, unknown_key) {
    s_expect_error("[train]\nsteps = 5\nstepz = 5\n", 3, "stepz = 5", "unknown key 'stepz'", "[train]");
}

Test(config_errors, key_in_the_wrong_section) {
    s_expect_error("[model]\nsteps = 5\n", 2, "steps = 5", "unknown key 'steps'", "[model]");
}

Test(config_errors, unknown_section) {
    s_expect_error("# config\n[trian]\nsteps = 5\n", 2, "[trian]", "unknown section [trian]", NULL);
}

Test(config_errors, not_an_integer) {
    s_expect_error("[train]\nsteps = 12x\n", 2, "steps = 12x", "train.steps", "'12x' is not an integer");
    s_expect_error("[train]\nsteps = 1.5\n", 2, "steps = 1.5", "train.steps", "not an integer");
    s_expect_error("[train]\nsteps =\n", 2, "steps =", "train.steps", "'' is not an integer");
    s_expect_error("[train]\nseed = 99999999999999999999\n", 2, "seed = 99999999999999999999", "train.seed",
                   "not an integer");
}

Test(config_errors, not_a_number) {
    s_expect_error("[train]\nlr = fast\n", 2, "lr = fast", "train.lr", "'fast' is not a finite number");
    s_expect_error("[train]\nlr = nan\n", 2, "lr = nan", "train.lr", "not a finite number");
    s_expect_error("[train]\nlr = inf\n", 2, "lr = inf", "train.lr", "not a finite number");
    s_expect_error("[train]\nlr = 1e999\n", 2, "lr = 1e999", "train.lr", "not a finite number");
}

Test(config_errors, bad_switch_and_choice) {
    s_expect_error("[train]\ntf32 = maybe\n", 2, "tf32 = maybe", "train.tf32", "'maybe' is not on/off");
    s_expect_error("[train]\ndevice = gpu\n", 2, "device = gpu", "train.device", "'gpu' is not one of cpu|cuda");
    s_expect_error("[node]\nlog_level = verbose\n", 2, "log_level = verbose", "node.log_level", "not one of");
    s_expect_error("[train]\ndevice = cpu2\n", 2, "device = cpu2", "train.device", "not one of");
}

Test(config_errors, out_of_range) {
    s_expect_error("[model]\nheads = 0\n", 2, "heads = 0", "model.heads", "0 is out of range [1, 1024]");
    s_expect_error("[model]\nvocab = 65537\n", 2, "vocab = 65537", "model.vocab", "out of range");
    s_expect_error("[train]\nsteps = -1\n", 2, "steps = -1", "train.steps", "out of range");
    s_expect_error("[train]\nbatch = 99999999999\n", 2, "batch = 99999999999", "train.batch", "out of range");
    s_expect_error("[train]\nlr = 11\n", 2, "lr = 11", "train.lr", "11 is out of range [0, 10]");
    s_expect_error("[train]\nbeta2 = 1\n", 2, "beta2 = 1", "train.beta2", "out of range");
    s_expect_error("[train]\ndata_stream = -2\n", 2, "data_stream = -2", "train.data_stream", "out of range");
}

Test(config_errors, malformed_lines) {
    s_expect_error("[train]\n\nsteps 5\n", 3, "steps 5", "expected 'key = value'", NULL);
    s_expect_error("[train\nsteps = 5\n", 1, "[train", "malformed section header", NULL);
    s_expect_error("[train] steps = 5\n", 1, "[train] steps = 5", "malformed section header", NULL);
    s_expect_error("steps = 5\n", 1, "steps = 5", "key outside any [section]", NULL);
}

Test(config_errors, too_long) {
    static char text[12000];
    // A line longer than the parser's buffer is refused, not split into two lines.
    int n = snprintf(text, sizeof text, "[run]\nname = ");
    memset(text + n, 'x', 5000);
    snprintf(text + n + 5000, sizeof text - (size_t)n - 5000, "\n");
    loco_config_t c;
    char err[1024];
    cr_assert_eq(s_load(&c, text, err, sizeof err), -1);
    cr_expect(strstr(err, ":2: line longer than") != NULL, "%s", err);
    // A value longer than its field.
    n = snprintf(text, sizeof text, "[train]\ndata = ");
    memset(text + n, 'd', 1500);
    snprintf(text + n + 1500, sizeof text - (size_t)n - 1500, "\n");
    cr_assert_eq(s_load(&c, text, err, sizeof err), -1);
    cr_expect(strstr(err, ":2: train.data: value is longer than 1023 characters") != NULL, "%s", err);
}

Test(config_errors, missing_file) {
    loco_config_t c;
    config_defaults(&c);
    char err[1024] = "";
    cr_assert_eq(config_load(&c, "/nonexistent/loco.ini", err, sizeof err), -1);
    cr_expect(strstr(err, "/nonexistent/loco.ini: cannot open: No such file or directory") != NULL, "%s", err);
}

Test(config_errors, first_error_wins_and_names_its_own_line) {
    s_expect_error("[train]\n# one\n\nsteps = 10\nlr = x\nbatch = y\n", 5, "lr = x", "train.lr", NULL);
}

// ---------------------------------------------------------------------------------------------
// --set

Test(config_set, applies_one_value) {
    loco_config_t c;
    config_defaults(&c);
    char err[1024] = "";
    cr_assert_eq(config_set(&c, "train.steps=7", err, sizeof err), 0, "%s", err);
    cr_expect_eq(c.steps, 7);
    cr_assert_eq(config_set(&c, " model.layers = 3 ", err, sizeof err), 0, "%s", err);
    cr_expect_eq(c.model.layers, 3);
    // Only the first dot separates section and key: values may hold dots and '='.
    cr_assert_eq(config_set(&c, "train.data=./a.b/c=d", err, sizeof err), 0, "%s", err);
    cr_expect_str_eq(c.data, "./a.b/c=d");
    cr_assert_eq(config_set(&c, "train.lr=1e-3", err, sizeof err), 0, "%s", err);
    cr_expect_float_eq(c.lr, 1e-3f, 0);
}

Test(config_set, overrides_the_file) {
    loco_config_t c;
    char err[1024];
    cr_assert_eq(s_load(&c, "[train]\nsteps = 5\nbatch = 3\n", err, sizeof err), 0, "%s", err);
    cr_assert_eq(config_set(&c, "train.steps=9", err, sizeof err), 0, "%s", err);
    cr_expect_eq(c.steps, 9);
    cr_expect_eq(c.batch, 3);
}

static void s_expect_set_error(const char *assign, const char *frag) {
    loco_config_t c;
    config_defaults(&c);
    char err[1024] = "";
    cr_assert_eq(config_set(&c, assign, err, sizeof err), -1, "accepted --set %s", assign);
    char head[256];
    snprintf(head, sizeof head, "--set %s: ", assign);
    cr_expect(strncmp(err, head, strlen(head)) == 0, "expected '%s' at the start of: %s", head, err);
    cr_expect(strstr(err, frag) != NULL, "expected '%s' in: %s", frag, err);
}

Test(config_set, errors_name_the_flag_key_and_reason) {
    s_expect_set_error("steps=7", "expected section.key=value");
    s_expect_set_error("train.steps", "expected section.key=value");
    s_expect_set_error("train=x.y", "expected section.key=value");
    s_expect_set_error("train.stepz=7", "unknown key 'stepz' in [train]");
    s_expect_set_error("trian.steps=7", "unknown section [trian]");
    s_expect_set_error("train.lr=abc", "train.lr: 'abc' is not a finite number");
    s_expect_set_error("model.heads=0", "model.heads: 0 is out of range");
}

// ---------------------------------------------------------------------------------------------
// Cross-key checks

Test(config_validate, names_the_source_and_the_problem) {
    loco_config_t c;
    char err[1024];
    cr_assert_eq(s_load(&c, "[model]\nd_model = 30\nheads = 4\n", err, sizeof err), 0, "%s", err);
    cr_assert_eq(config_validate(&c, err, sizeof err), -1);
    char head[128];
    snprintf(head, sizeof head, "%s: [model] heads must divide d_model", s_path);
    cr_expect(strstr(err, head) != NULL, "%s", err);

    config_defaults(&c);
    cr_assert_eq(config_set(&c, "train.lr_min=0.5", err, sizeof err), 0);
    cr_assert_eq(config_validate(&c, err, sizeof err), -1);
    cr_expect(strstr(err, "lr_min (0.5) is larger than lr") != NULL, "%s", err);

    config_defaults(&c);
    cr_assert_eq(config_set(&c, "train.data=", err, sizeof err), 0);
    cr_assert_eq(config_validate(&c, err, sizeof err), -1);
    cr_expect(strstr(err, "[train] data is empty") != NULL, "%s", err);
}
