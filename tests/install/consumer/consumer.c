/* Links against an installed keycell and starts, uses and stops a cell. */
#include <keycell/keycell.h>
#include <stdio.h>

int main(int argc, char **argv) {
  char err[KEYCELL_ERROR_SIZE];
  if (argc != 2) {
    fprintf(stderr, "usage: %s KEY_FILE\n", argv[0]);
    return 2;
  }
  keycell *cell = keycell_start(NULL, err, sizeof(err));
  if (cell == NULL) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  EVP_PKEY *key = keycell_load_private_key(cell, argv[1], NULL, err,
                                           sizeof(err));
  if (key == NULL) {
    fprintf(stderr, "%s\n", err);
    keycell_free(cell);
    return 1;
  }
  int is_cell_key = keycell_is_cell_key(key);
  EVP_PKEY_free(key);
  keycell_free(cell);
  if (!is_cell_key) {
    fprintf(stderr, "the loaded key is not served by the cell\n");
    return 1;
  }
  printf("installed keycell works\n");
  return 0;
}
