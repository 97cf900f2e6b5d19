# kudig's rb> runner: digdag's runner.rb behaviour, standalone.
#
#     ruby rb_runner.rb INPUT.json OUTPUT.json
#
# Runs under any Ruby >= 2.5 with only its standard library (json).
#
# INPUT: {"command": "method" | "Mod::Class.method", "require": "file" | null, "params": {...}}.
# OUTPUT: {"store_params", "export_params", "subtask_config", "error"}; error is null or
# {"class", "message", "backtrace"}. Exit status 1 on error (the backtrace also goes to stderr,
# i.e. the task log).
#
# What user code sees, as with digdag:
# * `Digdag.env`: `params` (a Hash with String keys), `store(hash)`, `export(hash)`,
#   `set_state(hash)`, `add_subtask(hash)`, `add_subtask(method_name, hash)`,
#   `add_subtask(klass, method_name, hash)`; subtasks are +subtask0, +subtask1, ... in order;
# * the working directory in $LOAD_PATH; `require:` is required (after Digdag is defined);
# * `method` calls a top-level method; `Mod::Class.method` calls the singleton method when the
#   class has one, else the instance method of `Mod::Class.new(...)`;
# * arguments are taken from params by parameter name (required, optional, keyword arguments);
#   `**kw` gets every param; a missing required one is
#   ArgumentError "Method 'X' requires parameter 'y' but not set".

require 'json'

module Digdag
  SUBTASK_PREFIX = '+subtask'.freeze

  class Env
    attr_reader :params, :subtask_config, :export_params, :store_params, :state_params

    def initialize(params)
      @params = params
      @subtask_config = {}
      @export_params = {}
      @store_params = {}
      @state_params = {}
      @subtask_index = 0
    end

    def set_state(params = {}, **kw)
      @state_params.merge!(Env.stringify(params)).merge!(Env.stringify(kw))
    end

    def export(params = {}, **kw)
      @export_params.merge!(Env.stringify(params)).merge!(Env.stringify(kw))
    end

    def store(params = {}, **kw)
      @store_params.merge!(Env.stringify(params)).merge!(Env.stringify(kw))
    end

    def add_subtask(*args, **kw)
      params = args.last.is_a?(Hash) ? args.pop : {}
      config = Env.stringify(params).merge(Env.stringify(kw))
      case args.length
      when 0
        nil
      when 1
        config['rb>'] = args[0].to_s
      when 2
        config['rb>'] = "#{args[0]}.#{args[1]}"
      else
        raise ArgumentError, 'add_subtask: expected (params), (method_name, params) or (klass, method_name, params)'
      end
      begin
        JSON.generate(config)
      rescue StandardError => e
        raise TypeError, "Parameters must be serializable using JSON: #{e.message}"
      end
      @subtask_config["#{SUBTASK_PREFIX}#{@subtask_index}"] = config
      @subtask_index += 1
      nil
    end

    def self.stringify(hash)
      raise TypeError, "expected a Hash but got #{hash.class}" unless hash.is_a?(Hash)

      hash.each_with_object({}) { |(k, v), out| out[k.to_s] = v }
    end
  end

  class << self
    attr_accessor :env
  end
end

def digdag_inspect_command(command)
  fragments = command.split('.')
  method_name = fragments.pop
  if method_name.nil? || method_name.empty? || fragments.any?(&:empty?)
    raise ArgumentError, "Invalid rb> command #{command.inspect}: expected method or Mod::Class.method"
  end
  return [nil, method_name.to_sym, false] if fragments.empty?

  klass = Object.const_get(fragments.join('.'))
  [klass, method_name.to_sym, !klass.respond_to?(method_name)]
end

def digdag_method_label(receiver, method_name)
  return method_name.to_s if receiver.nil? || receiver.equal?(TOPLEVEL_BINDING.receiver)
  return "#{receiver}.#{method_name}" if receiver.is_a?(Module)

  "#{receiver.class}##{method_name}"
end

# [positional args, keyword args] for `method` from params, as digdag's digdag_inspect_arguments.
def digdag_inspect_arguments(method, label, params)
  args = []
  keywords = {}
  optional_done = false
  method.parameters.each do |kind, name|
    key = name.to_s
    case kind
    when :req
      raise ArgumentError, "Method '#{label}' requires parameter '#{key}' but not set" unless params.key?(key)

      args << params[key]
    when :opt
      # positional: once one optional argument is missing, the later ones take their defaults too
      if !optional_done && params.key?(key)
        args << params[key]
      else
        optional_done = true
      end
    when :rest
      optional_done = true # nothing from the config maps to *args
    when :keyreq
      raise ArgumentError, "Method '#{label}' requires parameter '#{key}' but not set" unless params.key?(key)

      keywords[name] = params[key]
    when :key
      keywords[name] = params[key] if params.key?(key)
    when :keyrest
      params.each_pair { |k, v| keywords[k.to_sym] = v }
    end
  end
  [args, keywords]
end

def digdag_call(receiver, method, label, params)
  args, keywords = digdag_inspect_arguments(method, label, params)
  return method.call(*args) if keywords.empty?

  method.call(*args, **keywords)
end

def digdag_run(command, params)
  klass, method_name, instance = digdag_inspect_command(command)
  if klass.nil?
    receiver = TOPLEVEL_BINDING.receiver
    digdag_call(receiver, receiver.method(method_name), method_name.to_s, params)
  elsif instance
    unless klass.method_defined?(method_name) || klass.private_method_defined?(method_name)
      raise NoMethodError, "undefined method '#{method_name}' for #{klass}"
    end

    init = klass.instance_method(:initialize)
    init_args, init_keywords = digdag_inspect_arguments(init, "#{klass}#initialize", params)
    object = init_keywords.empty? ? klass.new(*init_args) : klass.new(*init_args, **init_keywords)
    digdag_call(object, object.method(method_name), "#{klass}##{method_name}", params)
  else
    digdag_call(klass, klass.method(method_name), "#{klass}.#{method_name}", params)
  end
end

def digdag_main(argv)
  if argv.length != 2
    warn 'usage: rb_runner.rb INPUT.json OUTPUT.json'
    return 2
  end
  in_file, out_file = argv
  in_data = JSON.parse(File.read(in_file, encoding: 'UTF-8'))
  params = in_data['params'] || {}
  command = in_data['command'] || params['_command']
  Digdag.env = Digdag::Env.new(params)
  $LOAD_PATH.unshift(File.expand_path(Dir.pwd))

  error = nil
  begin
    raise ArgumentError, 'rb> requires a command: method or Mod::Class.method' unless command.is_a?(String)

    feature = in_data['require']
    require feature if feature.is_a?(String) && !feature.empty?
    digdag_run(command, params)
  rescue SystemExit => e
    error = { 'class' => 'SystemExit', 'message' => "Ruby command #{command} exited with status #{e.status}",
              'backtrace' => (e.backtrace || []).join("\n") }
  rescue Exception => e # rubocop:disable Lint/RescueException
    backtrace = ["#{e.class}: #{e.message}", *(e.backtrace || []).map { |l| "\tfrom #{l}" }].join("\n")
    # Ruby >= 3.1 appends a code snippet to NameError messages (error_highlight): not the message
    message = e.respond_to?(:original_message) ? e.original_message : e.message
    error = { 'class' => e.class.name.to_s, 'message' => message.to_s, 'backtrace' => backtrace }
  end

  env = Digdag.env
  out = {
    'subtask_config' => env.subtask_config,
    'export_params' => env.export_params,
    'store_params' => env.store_params,
    'error' => error
  }
  begin
    data = JSON.generate(out)
  rescue StandardError => e
    error = { 'class' => 'TypeError',
              'message' => "Stored or exported parameters must be serializable using JSON: #{e.message}",
              'backtrace' => '' }
    data = JSON.generate('subtask_config' => {}, 'export_params' => {}, 'store_params' => {}, 'error' => error)
  end
  File.write(out_file, data, encoding: 'UTF-8')
  if error
    $stderr.write("#{error['backtrace'].empty? ? "#{error['class']}: #{error['message']}" : error['backtrace']}\n")
    $stderr.flush
    return 1
  end
  0
end

$stdout.sync = true
exit(digdag_main(ARGV))
