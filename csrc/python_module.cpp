// The Python module object of ggnet_fast._C.  Importing it loads this shared library,
// whose static initialisers register the torch.ops.ggnet_fast operators; the module
// itself only reports how it was built.  Compiled only for the Python extension
// (setup.py defines GGNET_PYTHON_MODULE), so the CMake library needs no Python.
#if defined(GGNET_PYTHON_MODULE)
#include <Python.h>

extern "C" PyMODINIT_FUNC PyInit__C(void) {
  static PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "ggnet_fast._C",
                                   "Compiled ggnet_fast operators (torch.ops.ggnet_fast).", -1,
                                   nullptr};
  PyObject* module = PyModule_Create(&module_def);
  if (module == nullptr) return nullptr;
#if defined(GGNET_WITH_CUDA)
  const long with_cuda = 1;
#else
  const long with_cuda = 0;
#endif
  if (PyModule_AddIntConstant(module, "WITH_CUDA", with_cuda) != 0) {
    Py_DECREF(module);
    return nullptr;
  }
  return module;
}
#endif
