package config

import (
	"fmt"
	"os"
	"strings"

	"go.yaml.in/yaml/v3"
)

// restoreWhenCase gives the `when` maps of the commands read from the file
// at path their keys as written: viper lowercases every map key, but a
// `when` key names a member of an event's data, where case matters
// (reasonCode is not reasoncode). The commands of SWITCHBOARD_COMMANDS
// keep their case already (listHook parses them).
func restoreWhenCase(path string, cmds []Command) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: read %s: %w", path, err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return nil // viper read it; a file it read is YAML
	}
	list, _ := foldGet(doc, "commands").([]any)
	for i, item := range list {
		if i >= len(cmds) {
			break
		}
		m, _ := item.(map[string]any)
		outcomes, _ := foldGet(m, "outcomes").([]any)
		for j, o := range outcomes {
			if j >= len(cmds[i].Outcomes) {
				break
			}
			om, _ := o.(map[string]any)
			when, _ := foldGet(om, "when").(map[string]any)
			if len(when) == 0 {
				continue
			}
			lowered := cmds[i].Outcomes[j].When
			if len(lowered) != len(when) {
				return keyErr(fmt.Sprintf("commands[%d].outcomes[%d].when", i, j), "has members whose names differ only in case")
			}
			fixed := make(map[string]string, len(lowered))
			for k := range when {
				fixed[k] = lowered[strings.ToLower(k)]
			}
			cmds[i].Outcomes[j].When = fixed
		}
	}
	return nil
}

// foldGet returns m's value under key, in any case, as viper reads keys.
func foldGet(m map[string]any, key string) any {
	for k, v := range m {
		if strings.EqualFold(k, key) {
			return v
		}
	}
	return nil
}
