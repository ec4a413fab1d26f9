# What the layers' Makefiles share (template.yaml: Metadata BuildMethod: makefile; sam build runs
# `make --makefile <real path of the layer's Makefile> build-<Layer>` in a scratch copy of the layer folder).
#
# Every layer installs exactly the packages its requirements.txt pins, without their declared dependencies:
# nothing arrives that no function imports (tests/integration/packaging checks what each built function
# imports against what its layers hold), and no layer carries boto3 or botocore, which Lambda's runtime provides.
PYTHON ?= python3
LAYER_PYTHON_DIR = $(ARTIFACTS_DIR)/python
# Wheels for Lambda's python3.13 runtime (Amazon Linux 2023, glibc 2.34), whatever machine builds the layer:
# pip takes only the tags it is given, so every glibc from 2.17 to 2.34 is listed.
LAMBDA_PLATFORM = --only-binary=:all: --implementation cp --python-version 3.13 \
	$(foreach glibc,34 33 32 31 30 29 28 27 26 25 24 17,--platform manylinux_2_$(glibc)_x86_64) \
	--platform manylinux2014_x86_64

# $(call install_layer,<layer source folder>,<package folders to copy>)
define install_layer
	$(if $(ARTIFACTS_DIR),,$(error ARTIFACTS_DIR is not set: this target is run by sam build))
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --no-deps $(LAMBDA_PLATFORM) \
		-r "$(1)/requirements.txt" -t "$(LAYER_PYTHON_DIR)"
	$(foreach package,$(2),cp -R "$(1)/$(package)" "$(LAYER_PYTHON_DIR)/";)
	find "$(LAYER_PYTHON_DIR)" -name __pycache__ -type d -prune -exec rm -rf {} +
	rm -rf "$(LAYER_PYTHON_DIR)/bin"  # console scripts (f2py, onnxruntime_test): nothing imports them
	if find "$(LAYER_PYTHON_DIR)" -maxdepth 1 -iname 'boto*' | grep -q .; then \
		echo "a layer must not ship boto3/botocore (Lambda's runtime provides them)" >&2; exit 1; fi
endef
